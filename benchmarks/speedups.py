"""Speed and quality of the ``[[speedups]]`` (docs/speed.md): the built-in models and the SD case.

    python -m benchmarks.speedups --model shapes --seed-sets 0,1,2,3 --out benchmarks/results/speedups.json
    python -m benchmarks.speedups --model digits-flow --seed-sets 0,1,2,3
    python -m benchmarks.speedups --model shapes --timing --rounds 5    # and digits-flow: the speed-up column
    python -m benchmarks.speedups --model unet-sd
    python -m benchmarks.speedups --table --doc docs/benchmarks.md     # (re)write the tables

Each run merges its figures into the JSON (so the seed sets can run in separate, short processes)
and prints the table. Per model and seed set, every setting generates the same images (the same
prompts or labels and per-sample seeds) one after the other, so background load falls on all
of them alike:

- ``shapes``: the 90 GenEval prompts (``sfumato_eval.geneval``), one image each, seed set ``k``
  giving prompt ``i`` the seed ``1000 k + i``; the score is GenEval's overall (mean over tasks).
- ``digits-flow``: every class 9 times (90 images); the score is the shipped digits classifier's
  accuracy on the intended classes.
- ``unet-sd``: the SD-architecture pipeline of ``benchmarks.cases`` (random weights: only speed
  and the distance to the uncached image mean something) at 32x32 latents (1,024 tokens at the
  first level), 20 DDIM steps, CFG, one image, three rounds.

Quality against the uncached images: mean absolute pixel difference (pixels in [0, 1]) and the
cosine distance of the model's own CLIP image embeddings (``1 - cos``; shapes' and digits' CLIP
image towers). Speed-up: with ``--timing`` figures, the median over rounds of the uncached call's
time over the setting's (8 samples, the settings called back to back in each round); without,
the uncached time over the setting's summed over the seed sets. Times are whole calls: encoding,
sampling, decoding.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import sfumato

#: Settings per model: ``[[speedups]]`` tables, and ``steps`` where the setting changes the step count.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "shapes": {
        "none": {"speedups": []},
        "12 steps": {"speedups": [], "steps": 12},
        "deepcache N=2": {"speedups": [{"type": "deepcache", "interval": 2}]},
        "deepcache N=2, start 0.3": {"speedups": [{"type": "deepcache", "interval": 2, "start": 0.3}]},
        "deepcache N=3": {"speedups": [{"type": "deepcache", "interval": 3}]},
        "12 steps + deepcache N=2, start 0.3": {"speedups": [{"type": "deepcache", "interval": 2, "start": 0.3}],
                                                "steps": 12},
        "tome 0.5": {"speedups": [{"type": "tome", "ratio": 0.5, "max_downsample": 2}]},
        "16 steps": {"speedups": [], "steps": 16},
        "deepcache N=2, start 0.5": {"speedups": [{"type": "deepcache", "interval": 2, "start": 0.5}]},
    },
    "digits-flow": {
        "none": {"speedups": []},
        "first-block-cache 0.1": {"speedups": [{"type": "first-block-cache", "threshold": 0.1}]},
        "first-block-cache 0.2": {"speedups": [{"type": "first-block-cache", "threshold": 0.2}]},
        "taylorseer N=3": {"speedups": [{"type": "taylorseer", "interval": 3, "warmup": 3}]},
        "taylorseer N=5": {"speedups": [{"type": "taylorseer", "interval": 5, "warmup": 3}]},
        "taylorseer N=3 attention": {"speedups": [{"type": "taylorseer", "interval": 3, "warmup": 3,
                                                   "target": "attention"}]},
    },
    "unet-sd": {
        "none": {"speedups": []},
        "deepcache N=3": {"speedups": [{"type": "deepcache", "interval": 3}]},
        "tome 0.5": {"speedups": [{"type": "tome", "ratio": 0.5}]},
        "deepcache N=3 + tome 0.5": {"speedups": [{"type": "deepcache", "interval": 3}, {"type": "tome", "ratio": 0.5}]},
    },
}
PER_SEED_SET = 90
#: Samples per call of the ``--timing`` rounds.
TIMING_BATCH = 8


def clip_distance(encoder: Any, images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean ``1 - cos`` between the CLIP image embeddings of ``images`` and ``reference``."""
    a, b = encoder.encode(images).pooled, encoder.encode(reference).pooled
    return (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).mean().item()


def shapes_calls(seed_set: int):
    from sfumato_eval.geneval import evaluate, prompt_set, summarise
    from sfumato_eval.shapes_detector import detect_shapes

    prompts = prompt_set()
    seeds = [1000 * seed_set + i for i in range(len(prompts))]

    def call(pipe, steps):
        return pipe([p.prompt for p in prompts], seeds=seeds, steps=steps, progress=False)

    def score(result) -> float:
        passed = [evaluate(p, detect_shapes(image)).passed for p, image in zip(prompts, result.images)]
        return summarise([p.task for p in prompts], passed)["overall"]

    return call, score, lambda pipe: pipe.image_encoder


def digits_calls(seed_set: int):
    from sfumato_eval.digits import evaluate_digits
    from sfumato_eval.digits_classifier import load_digits_classifier

    labels = [c for c in range(10) for _ in range(PER_SEED_SET // 10)]
    seeds = [1000 * seed_set + i for i in range(len(labels))]
    classifier = load_digits_classifier()
    encoder = sfumato.load_pipeline("digits-text").image_encoder  # the digits CLIP's image tower

    def call(pipe, steps):
        return pipe(labels=labels, seeds=seeds, steps=steps, progress=False)

    def score(result) -> float:
        predicted = classifier_predictions(classifier, result.decoded.float().clamp(-1, 1))
        return (predicted == torch.tensor(labels)).float().mean().item()

    return call, score, lambda pipe: encoder


def classifier_predictions(classifier: Any, images: torch.Tensor) -> torch.Tensor:
    from sfumato_eval.digits import classifier_features

    return classifier_features(classifier, images)[1]


def run_model(model: str, seed_sets: list[int],
              names: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """``{setting: {seed_set: figures}}`` for the built-in ``model`` (its settings ``names``, the
    uncached one always first)."""
    settings = {name: setting for name, setting in SETTINGS[model].items()
                if names is None or name == "none" or name in names}
    pipes = {name: sfumato.load_pipeline(model, overrides={"speedups": setting["speedups"]})
             for name, setting in settings.items()}
    figures: dict[str, dict[str, dict[str, float]]] = {name: {} for name in pipes}
    for pipe in pipes.values():  # warm-up: the first call of a process pays for allocations and lazy loading
        with torch.no_grad():
            pipe(**({"prompt": "a red circle"} if model == "shapes" else {"labels": 3}), steps=4, progress=False)
    for seed_set in seed_sets:
        call, score, encoder_of = (shapes_calls if model == "shapes" else digits_calls)(seed_set)
        baseline = None
        for name, pipe in pipes.items():
            start = time.perf_counter()
            with torch.no_grad():
                result = call(pipe, settings[name].get("steps"))
            seconds = time.perf_counter() - start
            if baseline is None:
                baseline = result
            images, reference = result.decoded.float(), baseline.decoded.float()
            with torch.no_grad():
                distance = clip_distance(encoder_of(pipe), images.clamp(-1, 1), reference.clamp(-1, 1))
            figures[name][str(seed_set)] = {
                "seconds": seconds, "score": score(result), "images": len(images),
                "pixel_diff": ((images - reference).abs().mean() / 2).item(), "clip_distance": distance,
            }
            print(f"{model} seed set {seed_set} {name}: {figures[name][str(seed_set)]}", flush=True)
    return figures


def run_timing(model: str, rounds: int, batch: int = TIMING_BATCH) -> dict[str, list[float]]:
    """Seconds per call of every setting of a built-in ``model`` on ``batch`` samples, the
    settings called one after the other in each round, so each round's ratios compare calls made
    seconds apart (the shared machine's load drifts over minutes)."""
    settings = SETTINGS[model]
    pipes = {name: sfumato.load_pipeline(model, overrides={"speedups": setting["speedups"]})
             for name, setting in settings.items()}
    if model == "shapes":
        from sfumato_eval.geneval import prompt_set

        arguments = {"prompt": [p.prompt for p in prompt_set()[::11][:batch]]}
    else:
        arguments = {"labels": list(range(batch))}
    seconds: dict[str, list[float]] = {name: [] for name in pipes}
    for round_ in range(rounds + 1):  # round 0 warms up
        for name, pipe in pipes.items():
            start = time.perf_counter()
            with torch.no_grad():
                pipe(**arguments, seed=round_, steps=settings[name].get("steps"), progress=False)
            if round_:
                seconds[name].append(time.perf_counter() - start)
        print(f"{model} timing round {round_}: {({n: round(s[-1], 2) for n, s in seconds.items() if s})}", flush=True)
    return seconds


def run_sd(rounds: int = 3) -> dict[str, dict[str, dict[str, float]]]:
    """The SD-architecture pipeline of ``benchmarks.cases`` at 32x32 latents, per round."""
    from . import references

    root = Path(tempfile.mkdtemp(prefix="sfumato-speedups-"))
    folder = references.sd_folder(root, "full")
    side = references.SD_UNET["full"]["sample_size"]
    downscale = 2 ** (len(references.SD_VAE["full"]["block_out_channels"]) - 1)
    latents = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    pipes = {name: sfumato.load_pipeline(folder, {"speedups": setting["speedups"]})
             for name, setting in SETTINGS["unet-sd"].items()}
    figures: dict[str, dict[str, dict[str, float]]] = {name: {} for name in pipes}
    baseline = None
    for round_ in range(rounds + 1):  # round 0 warms up
        for name, pipe in pipes.items():
            start = time.perf_counter()
            result = pipe("a red circle above a blue square", negative_prompt="", latents=latents, steps=20,
                          height=side * downscale, width=side * downscale, progress=False)
            seconds = time.perf_counter() - start
            baseline = baseline if baseline is not None else result
            if round_:
                figures[name][str(round_)] = {
                    "seconds": seconds, "images": 1,
                    "pixel_diff": ((result.decoded.float() - baseline.decoded.float()).abs().mean() / 2).item(),
                }
                print(f"unet-sd round {round_} {name}: {figures[name][str(round_)]}", flush=True)
    return figures


def table(results: dict[str, Any]) -> str:
    """The markdown tables of every model in ``results``."""
    lines = []
    for model, settings in results.items():
        if model == "timing" or not isinstance(settings, dict) or "none" not in settings:
            continue
        timing = results.get("timing", {}).get(model, {})
        base_seconds = settings["none"]
        sets = sorted(base_seconds)
        scored = model != "unet-sd"
        what = {"shapes": "GenEval overall", "digits-flow": "digits accuracy"}.get(model)
        lines += [f"**{model}** ({len(sets)} {'seed sets' if scored else 'rounds'}: {', '.join(sets)}; "
                  f"{base_seconds[sets[0]]['images']} images each)", ""]
        header = "| setting | speed-up | s per image |"
        header += f" {what} (mean; per set) | drop |" if scored else ""
        header += " mean abs pixel diff |" + (" CLIP distance |" if scored else "")
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for name, per_set in settings.items():
            common = [s for s in sets if s in per_set]
            if not common:
                continue
            total = sum(per_set[s]["seconds"] for s in common)
            base = sum(base_seconds[s]["seconds"] for s in common)
            images = sum(per_set[s]["images"] for s in common)
            speed_up, per_image = base / total, total / images
            if name in timing and "none" in timing:  # per-round ratios of calls made seconds apart
                speed_up = statistics.median(b / t for b, t in zip(timing["none"], timing[name]))
                per_image = statistics.median(timing[name]) / TIMING_BATCH
            row = f"| {name} | {speed_up:.2f}x | {per_image:.3f} |"
            if scored:
                scores = [per_set[s]["score"] for s in common]
                base_score = statistics.mean(base_seconds[s]["score"] for s in common)
                row += (f" {statistics.mean(scores):.3f} ({', '.join(f'{x:.3f}' for x in scores)}) |"
                        f" {base_score - statistics.mean(scores):+.3f} |")
            row += f" {statistics.mean(per_set[s]['pixel_diff'] for s in common):.4f} |"
            if scored:
                row += f" {statistics.mean(per_set[s]['clip_distance'] for s in common):.4f} |"
            lines.append(row)
        lines.append("")
    return "\n".join(lines)


START, END = "<!-- speedup results: start (written by benchmarks.speedups) -->", "<!-- speedup results: end -->"


def write_doc(doc: Path, text: str) -> None:
    """Replace the text between the speedup markers of ``doc``."""
    content = doc.read_text()
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(SETTINGS), default=None)
    parser.add_argument("--seed-sets", default="0,1,2,3", help="comma-separated seed sets (built-in models)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (unet-sd, --timing)")
    parser.add_argument("--settings", default=None, help="';'-separated setting names to run (default: all)")
    parser.add_argument("--timing", action="store_true", help="time every setting of a built-in model on 8 "
                        "samples in interleaved rounds (the speed-up column)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speedups.json"))
    parser.add_argument("--table", action="store_true", help="only print (and --doc write) the tables")
    parser.add_argument("--doc", type=Path, default=None, help="markdown file whose speedup section to rewrite")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.model is not None and args.timing:
        results.setdefault("timing", {})[args.model] = run_timing(args.model, args.rounds)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    elif args.model is not None and not args.table:
        if args.model == "unet-sd":
            new = run_sd(args.rounds)
            results["unet-sd"] = new
        else:
            names = args.settings.split(";") if args.settings else None
            unknown = sorted(set(names or []) - set(SETTINGS[args.model]))
            if unknown:
                parser.error(f"unknown settings {unknown} of {args.model}; its settings: {'; '.join(SETTINGS[args.model])}")
            new = run_model(args.model, [int(s) for s in args.seed_sets.split(",")], names)
            merged = results.setdefault(args.model, {})
            for name, per_set in new.items():
                merged.setdefault(name, {}).update(per_set)
        results["machine"] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    text = table(results)
    print(text)
    if args.doc is not None:
        write_doc(args.doc, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
