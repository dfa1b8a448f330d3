"""Time to an image at equal quality: sfumato's best configuration against diffusers' best, on the
same weights, CPU (issue #21, item 6). docs/benchmarks.md, "Time to an image at equal quality".

    python -m benchmarks.time_to_image --case shapes --seed-sets 0,1    # and 2,3: a process each
    python -m benchmarks.time_to_image --case shapes --timing --rounds 5 --batch 16
    python -m benchmarks.time_to_image --case unet-sd --rounds 5
    python -m benchmarks.time_to_image --table --doc docs/benchmarks.md

Each run merges its figures into ``benchmarks/results/time_to_image.json`` and prints the table.

- ``shapes``: the built-in model exported as a diffusers ``StableDiffusionPipeline`` folder
  (``export_shapes``: its U-Net and VAE through their ``to_diffusers``, its text tower through
  ``sfumato_clip.export_hf`` as a transformers ``CLIPTextModel`` with its own BPE tokenizer).
  Before scoring, the run checks that diffusers and sfumato draw the same images from that folder
  (same latents, DPM-Solver++(2M), 20 steps). Per seed set ``k``, the 90 GenEval prompts, prompt
  ``i`` from the initial latents of seed ``1000 k + i`` (the same tensor passed to both libraries),
  CFG 5 with the empty negative prompt, one call of 90 images per configuration, the
  configurations one after the other (load on the shared machine falls on all alike). Score:
  ``sfumato_eval.geneval`` overall. Reference: diffusers' DPM-Solver++(2M) at 50 steps.
- ``unet-sd``: the SD-architecture pipeline of ``benchmarks.cases`` (random weights, so no score:
  the mean absolute pixel difference, pixels in [0, 1], to diffusers' 50-step DDIM image of the
  same latents stands for quality) at 32x32 latents, CFG 7.5, one image; every configuration
  called once per round, ``--rounds`` timed rounds after a short warm-up.

A library's best configuration is its fastest one within the bound (a GenEval drop of at most
``--max-drop`` from the reference's score; a pixel difference of at most ``--tolerance``).
Times are whole calls (text encoding, sampling, decoding, PIL images), one thread.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sfumato

REFERENCE = "diffusers dpm++2m 50"
SD_REFERENCE = "diffusers ddim 50"
#: name -> library, sampler (sfumato type / diffusers class), steps and sfumato ``[[speedups]]``.
SHAPES: dict[str, dict[str, Any]] = {
    REFERENCE: {"library": "diffusers", "sampler": "DPMSolverMultistepScheduler", "steps": 50},
    "diffusers dpm++2m 20": {"library": "diffusers", "sampler": "DPMSolverMultistepScheduler", "steps": 20},
    "diffusers dpm++2m 16": {"library": "diffusers", "sampler": "DPMSolverMultistepScheduler", "steps": 16},
    "diffusers dpm++2m 14": {"library": "diffusers", "sampler": "DPMSolverMultistepScheduler", "steps": 14},
    "diffusers dpm++2m 12": {"library": "diffusers", "sampler": "DPMSolverMultistepScheduler", "steps": 12},
    "diffusers dpm++2m 10": {"library": "diffusers", "sampler": "DPMSolverMultistepScheduler", "steps": 10},
    "diffusers unipc 12": {"library": "diffusers", "sampler": "UniPCMultistepScheduler", "steps": 12},
    "sfumato dpmpp-2m 20": {"library": "sfumato", "sampler": "dpmpp-2m", "steps": 20},
    "sfumato dpmpp-2m 16": {"library": "sfumato", "sampler": "dpmpp-2m", "steps": 16},
    "sfumato dpmpp-2m 14": {"library": "sfumato", "sampler": "dpmpp-2m", "steps": 14},
    "sfumato dpmpp-2m 12": {"library": "sfumato", "sampler": "dpmpp-2m", "steps": 12},
    "sfumato dpmpp-2m 10": {"library": "sfumato", "sampler": "dpmpp-2m", "steps": 10},
    "sfumato dpmpp-2m 16 + deepcache N=2, start 0.5": {
        "library": "sfumato", "sampler": "dpmpp-2m", "steps": 16,
        "speedups": [{"type": "deepcache", "interval": 2, "start": 0.5}]},
    "sfumato dpmpp-2m 16 + deepcache N=2, start 0.7": {
        "library": "sfumato", "sampler": "dpmpp-2m", "steps": 16,
        "speedups": [{"type": "deepcache", "interval": 2, "start": 0.7}]},
    "sfumato dpmpp-2m 20 + deepcache N=2, start 0.5": {
        "library": "sfumato", "sampler": "dpmpp-2m", "steps": 20,
        "speedups": [{"type": "deepcache", "interval": 2, "start": 0.5}]},
}
DEEPCACHE_TOME = [{"type": "deepcache", "interval": 3}, {"type": "tome", "ratio": 0.5}]
SD: dict[str, dict[str, Any]] = {
    SD_REFERENCE: {"library": "diffusers", "sampler": "DDIMScheduler", "steps": 50},
    "diffusers ddim 20": {"library": "diffusers", "sampler": "DDIMScheduler", "steps": 20},
    **{f"diffusers dpm++2m {n}": {"library": "diffusers", "sampler": "DPMSolverMultistepScheduler", "steps": n}
       for n in (12, 10, 8, 6, 5, 4)},
    **{f"sfumato dpmpp-2m {n}": {"library": "sfumato", "sampler": "dpmpp-2m", "steps": n} for n in (12, 8, 6, 5)},
    **{f"sfumato dpmpp-2m {n} + tome 0.5": {"library": "sfumato", "sampler": "dpmpp-2m", "steps": n,
                                            "speedups": [{"type": "tome", "ratio": 0.5}]}
       for n in (12, 10, 8, 7, 6, 5, 4)},
    **{f"sfumato dpmpp-2m {n} + tome 0.3": {"library": "sfumato", "sampler": "dpmpp-2m", "steps": n,
                                            "speedups": [{"type": "tome", "ratio": 0.3}]} for n in (7, 6)},
    "sfumato dpmpp-2m 8 + deepcache N=2 + tome 0.5": {
        "library": "sfumato", "sampler": "dpmpp-2m", "steps": 8,
        "speedups": [{"type": "deepcache", "interval": 2}, {"type": "tome", "ratio": 0.5}]},
    "sfumato dpmpp-2m 12 + deepcache N=3 + tome 0.5": {"library": "sfumato", "sampler": "dpmpp-2m", "steps": 12,
                                                       "speedups": DEEPCACHE_TOME},
}
SHAPES_CFG, SD_CFG = 5.0, 7.5
SHAPES_FOLDER = Path("runs/time-to-image/shapes-diffusers")


# -- the shapes model as a diffusers folder ---------------------------------------------------


def export_shapes(folder: Path = SHAPES_FOLDER) -> Path:
    """Write the built-in ``shapes`` model as a ``StableDiffusionPipeline`` folder (once)."""
    if (folder / "model_index.json").exists():
        return folder
    import diffusers
    import transformers
    from sfumato_clip import CLIP, export_hf

    pipe = sfumato.load_pipeline("shapes")
    spec = pipe.spec
    work = Path(tempfile.mkdtemp(prefix="sfumato-shapes-export-"))
    pipe.component("denoiser").to_diffusers(work / "unet")
    pipe.component("autoencoder").to_diffusers(work / "vae")
    encoder = pipe.component("text_encoder")
    clip = CLIP(spec.text_encoder.architecture)
    clip.text.load_state_dict(encoder.text.state_dict())  # the vision tower is not exported's business
    export_hf(clip, work / "text", tokenizer=encoder.tokenizer)
    diffusion = spec.diffusion
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=diffusion.timesteps, beta_start=diffusion.beta_start, beta_end=diffusion.beta_end,
        beta_schedule=diffusion.betas, prediction_type=diffusion.prediction,
        timestep_spacing=spec.scheduler.spacing, steps_offset=spec.scheduler.steps_offset)
    exported = diffusers.StableDiffusionPipeline(
        unet=diffusers.UNet2DConditionModel.from_pretrained(work / "unet"),
        vae=diffusers.AutoencoderKL.from_pretrained(work / "vae"),
        text_encoder=transformers.CLIPTextModel.from_pretrained(work / "text"),
        tokenizer=transformers.CLIPTokenizer(str(work / "text" / "vocab.json"), str(work / "text" / "merges.txt"),
                                             model_max_length=encoder.tokenizer.context_length,
                                             pad_token="<|endoftext|>"),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    exported.save_pretrained(staging)
    shutil.rmtree(staging / "tokenizer")  # transformers 5 writes tokenizer.json only: keep the BPE files
    (staging / "tokenizer").mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(work / "text" / name, staging / "tokenizer" / name)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    shutil.rmtree(work)
    return folder


# -- the two libraries behind one call --------------------------------------------------------


def load(folder: Path | str, setting: dict[str, Any], cfg: float) -> Any:
    """A pipeline of either library for ``setting`` on the diffusers ``folder`` (diffusers takes
    the guidance scale per call; sfumato's is the spec's ``[[guidance]]``)."""
    if setting["library"] == "diffusers":
        import diffusers

        pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None,
                                                                 requires_safety_checker=False)
        pipe.scheduler = getattr(diffusers, setting["sampler"]).from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    overrides: dict[str, Any] = {"speedups": setting.get("speedups", []),
                                 "guidance": [{"type": "cfg", "scale": cfg}], "scheduler.type": setting["sampler"]}
    return sfumato.load_pipeline(folder, overrides)


def generate(pipe: Any, setting: dict[str, Any], prompts: list[str], latents: torch.Tensor, cfg: float,
             side: int) -> tuple[list[Any], np.ndarray]:
    """PIL images and float pixels ``(B, H, W, 3)`` in [0, 1] of one whole call."""
    negative = [""] * len(prompts)
    with torch.no_grad():
        if setting["library"] == "diffusers":
            out = pipe(prompts, negative_prompt=negative, latents=latents, num_inference_steps=setting["steps"],
                       guidance_scale=cfg, height=side, width=side, output_type="np")
            return out.images, out.images
        result = pipe(prompts, negative_prompt=negative, latents=latents, steps=setting["steps"], height=side,
                      width=side, progress=False)
    return result.images, (result.decoded.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def timed(pipe: Any, setting: dict[str, Any], *args: Any) -> tuple[float, list[Any], np.ndarray]:
    start = time.perf_counter()
    images, floats = generate(pipe, setting, *args)
    return time.perf_counter() - start, images, floats


# -- shapes --------------------------------------------------------------------------------------


def seed_latents(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    return torch.stack([torch.randn(*shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


def run_shapes(seed_sets: list[int], names: list[str]) -> dict[str, Any]:
    """``{"parity": ..., "quality": {name: {seed_set: figures}}}`` for the ``shapes`` configurations."""
    from PIL import Image

    from sfumato_eval.geneval import evaluate, prompt_set, summarise
    from sfumato_eval.shapes_detector import detect_shapes

    folder = export_shapes()
    side, latent = 64, (4, 16, 16)
    pipes = {name: load(folder, SHAPES[name], SHAPES_CFG) for name in names}
    prompts = prompt_set()
    texts = [p.prompt for p in prompts]

    def score(images: list[Any]) -> float:
        pil = [image if isinstance(image, Image.Image) else Image.fromarray((image * 255).round().astype(np.uint8))
               for image in images]
        passed = [evaluate(p, detect_shapes(image)).passed for p, image in zip(prompts, pil)]
        return summarise([p.task for p in prompts], passed)["overall"]

    # Same folder, same latents, same sampler: the libraries must draw the same images.
    check = {"library": "diffusers", "sampler": "DPMSolverMultistepScheduler", "steps": 20}
    warm = seed_latents(list(range(8)), latent)
    _, _, theirs = timed(load(folder, check, SHAPES_CFG), check, texts[:8], warm, SHAPES_CFG, side)
    _, _, ours = timed(load(folder, {**check, "library": "sfumato", "sampler": "dpmpp-2m"}, SHAPES_CFG),
                       {**check, "library": "sfumato"}, texts[:8], warm, SHAPES_CFG, side)
    parity = float(np.abs(ours - theirs).max())
    print(f"parity (20 DPM++ 2M steps, 8 images): max abs pixel diff {parity:.2e}", flush=True)
    for name, pipe in pipes.items():  # warm-up: allocations and lazy loading
        generate(pipe, {**SHAPES[name], "steps": 2}, texts[:2], warm[:2], SHAPES_CFG, side)
    quality: dict[str, dict[str, Any]] = {name: {} for name in names}
    for seed_set in seed_sets:
        latents = seed_latents([1000 * seed_set + i for i in range(len(prompts))], latent)
        reference = None
        for name, pipe in pipes.items():
            seconds, images, floats = timed(pipe, SHAPES[name], texts, latents, SHAPES_CFG, side)
            reference = floats if reference is None else reference
            quality[name][str(seed_set)] = {"seconds": seconds, "score": score(images), "images": len(texts),
                                            "pixel_diff": float(np.abs(floats - reference).mean())}
            print(f"shapes seed set {seed_set} {name}: {quality[name][str(seed_set)]}", flush=True)
    return {"parity_max_abs": parity, "quality": quality}


def run_shapes_timing(names: list[str], rounds: int, batch: int) -> dict[str, Any]:
    """Seconds per call of ``batch`` images for every configuration, called one after the other in
    each round (every other round in reverse order), so each round compares calls made seconds
    apart on the shared machine, whose load drifts over minutes."""
    from sfumato_eval.geneval import prompt_set

    folder = export_shapes()
    prompts = [p.prompt for p in prompt_set()]
    texts = [prompts[(i * len(prompts)) // batch] for i in range(batch)]
    latents = seed_latents(list(range(batch)), (4, 16, 16))
    pipes = {name: load(folder, SHAPES[name], SHAPES_CFG) for name in names}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds + 1):  # round 0 warms up
        for name in names if round_ % 2 else names[::-1]:
            took, _, _ = timed(pipes[name], SHAPES[name], texts, latents, SHAPES_CFG, 64)
            if round_:
                seconds[name].append(took)
        print(f"shapes timing round {round_}: {({n: round(s[-1], 2) for n, s in seconds.items() if s})}", flush=True)
    return {"batch": batch, "seconds": seconds}


# -- the SD-architecture case --------------------------------------------------------------------


def run_sd(rounds: int) -> dict[str, Any]:
    """Every configuration once per round on the SD-architecture folder; pixel difference to the
    reference configuration's image (from the first round), seconds per round."""
    from . import references

    root = Path(tempfile.mkdtemp(prefix="sfumato-time-to-image-"))
    folder = references.sd_folder(root, "full")
    side = references.SD_UNET["full"]["sample_size"]
    downscale = 2 ** (len(references.SD_VAE["full"]["block_out_channels"]) - 1)
    latents = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    prompt = ["a red circle above a blue square"]
    pipes = {name: load(folder, setting, SD_CFG) for name, setting in SD.items()}
    for name, pipe in pipes.items():
        generate(pipe, {**SD[name], "steps": 2}, prompt, latents, SD_CFG, side * downscale)
    figures: dict[str, dict[str, Any]] = {name: {"seconds": []} for name in SD}
    reference = None
    names = list(SD)  # the reference first: the others' distances are to its image
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:  # every other round reversed: load drift
            if name == SD_REFERENCE and round_:  # its image and one time are enough
                continue
            seconds, _, floats = timed(pipes[name], SD[name], prompt, latents, SD_CFG, side * downscale)
            reference = floats if reference is None else reference
            figures[name]["seconds"].append(seconds)
            figures[name]["pixel_diff"] = float(np.abs(floats - reference).mean())
            print(f"unet-sd round {round_} {name}: {seconds:.2f} s, pixel diff {figures[name]['pixel_diff']:.4f}",
                  flush=True)
    return figures


# -- the tables ----------------------------------------------------------------------------------


def best(rows: dict[str, dict[str, Any]], library: str, within: Any) -> str | None:
    """The fastest configuration of ``library`` that is ``within`` the bound."""
    fitting = [n for n, r in rows.items() if r["library"] == library and r["seconds"] is not None and within(r)]
    return min(fitting, key=lambda n: rows[n]["seconds"]) if fitting else None


def shapes_rows(results: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per configuration: scores over the seed sets every configuration has, and the time that
    ranks it: the interleaved ``--timing`` rounds' median when there are some, else the quality
    runs' median (calls minutes apart, so load drift enters)."""
    quality, timing = results["quality"], results.get("timing", {}).get("seconds", {})
    sets = sorted(set.intersection(*(set(per_set) for per_set in quality.values())))
    rows = {}
    for name in [n for n in SHAPES if n in quality]:  # the configurations' own order, not the runs'
        per_set = quality[name]
        scores = [per_set[s]["score"] for s in sets]
        call = statistics.median(per_set[s]["seconds"] for s in sets)
        rows[name] = {"library": SHAPES[name]["library"], "score": statistics.mean(scores), "scores": scores,
                      "call_seconds": call,  # untimed configurations are left out of the ranking when there are rounds
                      "seconds": statistics.median(timing[name]) if name in timing else None if timing else call,
                      "rounds": timing.get(name), "pixel_diff": statistics.mean(per_set[s]["pixel_diff"] for s in sets),
                      "images": per_set[sets[0]]["images"]}
    return rows, sets


def table(results: dict[str, Any], max_drop: float, tolerance: float) -> str:
    lines = []
    if "shapes" in results:
        rows, sets = shapes_rows(results["shapes"])
        ref = rows[REFERENCE]["score"]
        timing = results["shapes"].get("timing")
        lines += [f"**shapes** ({len(sets)} seed sets: {', '.join(sets)}; {rows[REFERENCE]['images']} images "
                  f"each; diffusers and sfumato on the same latents differ by at most "
                  f"{results['shapes']['parity_max_abs']:.1e} per pixel at equal settings)", ""]
        header = "| configuration | s per call of 90 (quality runs, median) |"
        if timing:
            header += (f" s per call of {timing['batch']} (median of {len(next(iter(timing['seconds'].values())))}"
                       " interleaved rounds) |")
        header += " GenEval overall (mean; per set) | drop | mean abs pixel diff to the reference |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for name, r in rows.items():
            timed_cell = f" {r['seconds']:.2f} |" if r["seconds"] is not None else " |"
            lines.append(f"| {name} | {r['call_seconds']:.1f} |" + (timed_cell if timing else "")
                         + f" {r['score']:.3f} ({', '.join(f'{x:.3f}' for x in r['scores'])})"
                         f" | {ref - r['score']:+.3f} | {r['pixel_diff']:.4f} |")
        lines.append("")
        for bound in (max_drop, max_drop * 2):  # the bound, then twice it
            lines += verdict(rows, lambda r, b=bound: ref - r["score"] <= b, f"a drop of at most {bound:g}", "drop",
                             lambda r: f"{ref - r['score']:+.3f}")
    if "unet-sd" in results:
        figures = results["unet-sd"]
        rows = {name: {"library": SD[name]["library"], "seconds": statistics.median(f["seconds"]),
                       "rounds": f["seconds"], "pixel_diff": f["pixel_diff"]}
                for name, f in figures.items() if name in SD}
        lines += ["**unet-sd** (random weights; one image at 32x32 latents, CFG 7.5; median of "
                  f"{max(len(r['rounds']) for r in rows.values())} interleaved rounds)", "",
                  "| configuration | s per image (median) | mean abs pixel diff to diffusers' 50 DDIM steps |",
                  "|---|---|---|"]
        lines += [f"| {name} | {r['seconds']:.2f} | {r['pixel_diff']:.4f} |" for name, r in rows.items()]
        lines.append("")
        for bound in (tolerance, tolerance / 2, tolerance * 1.5):  # the stated bound, then how the answer moves
            lines += verdict(rows, lambda r, b=bound: r["pixel_diff"] <= b, f"a pixel difference of at most {bound:g}",
                             "pixel diff", lambda r: f"{r['pixel_diff']:.4f}")
    return "\n".join(lines)


def verdict(rows: dict[str, dict[str, Any]], within: Any, bound: str, what: str, show: Any) -> list[str]:
    """Each library's fastest configuration within the bound, and the speed ratio: the median of
    the per-round ratios where both were timed in the same rounds, else the ratio of medians."""
    ours, theirs = best(rows, "sfumato", within), best(rows, "diffusers", within)
    if ours is None or theirs is None:
        return [f"Within {bound}: {'no sfumato' if ours is None else 'no diffusers'} configuration.", ""]
    a, b = rows[theirs].get("rounds"), rows[ours].get("rounds")
    paired = a is not None and b is not None and len(a) == len(b)
    ratio = (statistics.median(x / y for x, y in zip(a, b)) if paired
             else rows[theirs]["seconds"] / rows[ours]["seconds"])
    return [f"Within {bound}: sfumato's fastest is **{ours}** ({rows[ours]['seconds']:.2f} s, {what} "
            f"{show(rows[ours])}), diffusers' fastest is **{theirs}** ({rows[theirs]['seconds']:.2f} s, {what} "
            f"{show(rows[theirs])}): sfumato is **{ratio:.2f}x** as fast"
            f"{' (median of per-round ratios)' if paired else ''}.", ""]


START, END = "<!-- time-to-image: start (written by benchmarks.time_to_image) -->", "<!-- time-to-image: end -->"


def write_doc(doc: Path, text: str) -> None:
    content = doc.read_text(encoding="utf-8")
    if START not in content or END not in content:
        raise SystemExit(f"{doc} has no {START} ... {END} markers to write the table between")
    head, rest = content.split(START, 1)
    doc.write_text(f"{head}{START}\n{text}\n{END}{rest.split(END, 1)[1]}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("shapes", "unet-sd"), default=None)
    parser.add_argument("--seed-sets", default="0", help="comma-separated seed sets (shapes)")
    parser.add_argument("--configs", default=None, help="';'-separated shapes configurations (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (unet-sd, shapes --timing)")
    parser.add_argument("--timing", action="store_true", help="shapes: time every configuration on --batch "
                        "images in interleaved rounds (the time column)")
    parser.add_argument("--batch", type=int, default=16, help="images per call of the shapes --timing rounds")
    parser.add_argument("--max-drop", type=float, default=0.02, help="GenEval drop allowed (shapes)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="mean abs pixel diff allowed (unet-sd)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/time_to_image.json"))
    parser.add_argument("--table", action="store_true", help="only print (and --doc write) the table")
    parser.add_argument("--doc", type=Path, default=None, help="markdown file whose time-to-image section to rewrite")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    unknown = sorted(set(args.configs.split(";")) - set(SHAPES)) if args.configs else []
    if unknown:
        parser.error(f"--configs: unknown shapes configurations {unknown}; they are: {'; '.join(SHAPES)}")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.case == "shapes" and not args.table and not args.timing:
        chosen = args.configs.split(";") if args.configs else list(SHAPES)
        names = [REFERENCE, *[n for n in SHAPES if n != REFERENCE and n in chosen]]
        new = run_shapes([int(s) for s in args.seed_sets.split(",")], names)
        merged = results.setdefault("shapes", {"quality": {}})
        merged["parity_max_abs"] = new["parity_max_abs"]
        for name, per_set in new["quality"].items():
            merged["quality"].setdefault(name, {}).update(per_set)
    elif args.case == "shapes" and args.timing:
        names = [n for n in SHAPES if not args.configs or n in args.configs.split(";")]
        results.setdefault("shapes", {"quality": {}})["timing"] = run_shapes_timing(names, args.rounds, args.batch)
    elif args.case == "unet-sd" and not args.table:
        results["unet-sd"] = run_sd(args.rounds)
    if args.case and not args.table:
        results["machine"] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    text = table(results, args.max_drop, args.tolerance)
    print(text)
    if args.doc is not None:
        write_doc(args.doc, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
