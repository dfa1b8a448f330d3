"""Sampler quality at few steps on the built-in ``shapes`` model: for every registered sampler x
sigma schedule x step count, the GenEval-style score (``sfumato_eval.geneval``) of a fixed
prompt/seed set and the mean absolute pixel difference to a many-step reference run of the same
prompts and seeds. docs/schedulers.md shows the table and the grid.

    python -m benchmarks.sampler_quality --out benchmarks/results/sampler_quality.json \\
        --doc docs/schedulers.md --grid docs/sampler-grid.png

The JSON is rewritten after every combination and a rerun skips the ones it holds, so a stopped
run resumes where it stopped; the reference images are cached under ``--cache``. ``--table``
only rewrites the document's table (and ``--grid`` the grid) from the JSON. Every sample has its
own seed (``generate(seeds=...)``), so a prompt's image does not depend on the rest of the batch
and ``sfumato generate PROMPT --seed S --set scheduler.type=...`` redraws it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

import sfumato
from sfumato_eval.geneval import TASKS, evaluate, prompt_set, summarise
from sfumato_eval.shapes_detector import detect_shapes

SCHEDULES = ("default", "karras", "beta", "align-your-steps")
STEPS = (8, 12, 20)
START, END = "<!-- sampler-quality:start -->", "<!-- sampler-quality:end -->"


# -- the prompt and seed set --------------------------------------------------------------------


def prompt_items(per_task: int, prompt_seed: int = 0) -> list[dict[str, Any]]:
    """``per_task`` items of each GenEval task, prompts evenly spaced through the task's list (a
    task with fewer prompts repeats them); item ``k`` is drawn with seed ``k``."""
    prompts = prompt_set(prompt_seed)
    items = []
    for task in TASKS:
        of_task = [p for p in prompts if p.task == task]
        for k in range(per_task):
            items.append(of_task[(k * len(of_task)) // per_task if per_task <= len(of_task) else k % len(of_task)])
    return [{"prompt": p, "seed": k} for k, p in enumerate(items)]


# -- one combination ----------------------------------------------------------------------------


def scheduler_overrides(sampler: str, schedule: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {"scheduler.type": sampler}
    if schedule != "default":
        overrides["scheduler.sigmas"] = schedule
    return overrides


def not_applicable(sampler: str, schedule: str) -> str | None:
    """Why ``sampler`` cannot run on ``schedule`` without trying it: samplers with no ``sigmas``
    field step between training timesteps (or distillation timesteps) and take no sigma schedule."""
    if schedule == "default":
        return None
    spec_class = sfumato.get_registry().components["scheduler"][sampler].cls.Spec
    if "sigmas" not in spec_class.model_fields:
        return "no `sigmas` field: it steps between the model's training timesteps"
    return None


def load(model: str, sampler: str, schedule: str) -> sfumato.Pipeline:
    return sfumato.load_pipeline(model, overrides=scheduler_overrides(sampler, schedule))


def draw(pipe: sfumato.Pipeline, items: list[dict[str, Any]], steps: int) -> list[Image.Image]:
    """Every item in one call, each sample from its own seed."""
    prompts = [item["prompt"].prompt for item in items]
    return pipe(prompts, seeds=[item["seed"] for item in items], steps=steps, progress=False).images


def score(images: list[Image.Image], items: list[dict[str, Any]]) -> dict[str, Any]:
    passed = [evaluate(item["prompt"], detect_shapes(image)).passed for image, item in zip(images, items)]
    report = summarise([item["prompt"].task for item in items], passed)
    return {"geneval": report["overall"], "tasks": {t: f["accuracy"] for t, f in report["tasks"].items()},
            "passed": passed}


def pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(image.convert("RGB"), dtype=np.int16) for image in images])  # (N, H, W, 3)


def distance(images: list[Image.Image], reference: np.ndarray) -> float:
    """Mean absolute difference of 8-bit pixel values (0-255) to the reference images."""
    return float(np.abs(pixels(images) - reference).mean())


# -- the run -------------------------------------------------------------------------------------


def registered_samplers() -> list[str]:
    return list(sfumato.get_registry().components["scheduler"])


def reference_key(args: argparse.Namespace) -> str:
    return f"{Path(args.model).stem}-{args.reference}-{args.reference_steps}-{args.per_task}"


def image_cache(args: argparse.Namespace) -> Path:
    """Where the default schedule's images of every sampler and step count are kept (the grid's)."""
    return Path(args.cache) / "images" / f"{Path(args.model).stem}-{args.per_task}"


def reference_images(args: argparse.Namespace, items: list[dict[str, Any]]) -> np.ndarray:
    """The reference run's pixels, cached in ``--cache`` per model, sampler, steps and item set."""
    path = Path(args.cache) / f"reference-{reference_key(args)}.npy"
    if path.exists():
        return np.load(path)
    print(f"reference: {args.reference}, {args.reference_steps} steps, {len(items)} images", file=sys.stderr)
    images = draw(load(args.model, args.reference, "default"), items, args.reference_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, pixels(images))
    return pixels(images)


def add_reference_score(results: dict[str, Any], reference: np.ndarray, items: list[dict[str, Any]]) -> None:
    """The reference images' own GenEval-style score, once."""
    if "reference" not in results:
        results["reference"] = score([Image.fromarray(image.astype(np.uint8)) for image in reference], items)


def write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sfumato.atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    items = prompt_items(args.per_task)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    settings = {"model": args.model, "reference": args.reference, "reference_steps": args.reference_steps,
                "per_task": args.per_task, "images": len(items)}
    listed = [{"task": i["prompt"].task, "prompt": i["prompt"].prompt, "seed": i["seed"]} for i in items]
    if results.get("settings") != settings or results.get("items") != listed:  # another set: start afresh
        results = {"settings": settings, "rows": {}}
    results["items"] = listed
    reference = reference_images(args, items)
    add_reference_score(results, reference, items)
    rows = results["rows"]
    samplers = args.samplers or registered_samplers()
    # Schedule by schedule (each sampler's own first), so a stopped run has whole columns.
    work = [(sampler, schedule, args.steps) for schedule in args.schedules for sampler in samplers]
    if args.check:
        sampler, steps = args.check.split(":")
        work.append((sampler, "default", [int(steps)]))
    progress = tqdm(total=sum(len(steps_list) for *_, steps_list in work), desc="sampler quality", unit="run")
    for sampler, schedule, steps_list in work:
        pipe, reason = None, not_applicable(sampler, schedule)
        for steps in steps_list:
            key = f"{sampler}|{schedule}|{steps}"
            progress.set_postfix_str(key)
            if key not in rows:
                rows[key], pipe = measure(args.model, sampler, schedule, steps, items, reference, pipe, reason,
                                          cache=image_cache(args))
                write(out, results)
            progress.update()
    progress.close()
    return results


def measure(model: str, sampler: str, schedule: str, steps: int, items: list[dict[str, Any]],
            reference: np.ndarray, pipe: sfumato.Pipeline | None, reason: str | None, cache: Path):
    """One combination's row (``{"na": reason}`` when the sampler refuses it) and the pipeline,
    reused for the sampler's next step count. The default schedule's images are kept in
    ``cache`` for the grid."""
    if reason:
        return {"na": reason}, None
    start = time.perf_counter()
    try:
        pipe = pipe or load(model, sampler, schedule)
        images = draw(pipe, items, steps)
    except sfumato.SfumatoError as exc:
        return {"na": str(exc).splitlines()[0]}, pipe
    stochastic = bool(getattr(pipe.component("scheduler"), "stochastic", False))
    if schedule == "default":
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{sampler}-{steps}.npy", pixels(images).astype(np.uint8))
    return {**score(images, items), "distance": distance(images, reference), "stochastic": stochastic,
            "seconds": round(time.perf_counter() - start, 1)}, pipe


# -- the table and the grid -------------------------------------------------------------------


def markdown(results: dict[str, Any], samplers: list[str], schedules: list[str], steps: list[int]) -> str:
    """Two tables (GenEval score, distance), a row per sampler and a column per schedule x steps;
    n/a cells are explained below them."""
    rows, s = results["rows"], results["settings"]
    header = [f"{sched if sched != 'align-your-steps' else 'AYS'} {n}" for sched in schedules for n in steps]
    reasons: dict[str, list[str]] = {}

    def cell(sampler, schedule, n, field, fmt):
        row = rows.get(f"{sampler}|{schedule}|{n}")
        if row is None:
            return ""
        if "na" in row:
            reasons.setdefault(row["na"], []).append(sampler)
            return "n/a"
        return fmt.format(row[field])

    def mean(sampler, field):
        values = [rows[k][field] for sched in schedules for n in steps
                  if field in rows.get(k := f"{sampler}|{sched}|{n}", {})]
        return sum(values) / len(values) if values else None

    lines = []
    for title, field, fmt in (("GenEval-style overall (higher is better)", "geneval", "{:.2f}"),
                              (f"Mean abs pixel difference to {s['reference']} at {s['reference_steps']} steps "
                               "(0-255, lower is better)", "distance", "{:.1f}")):
        lines += [f"**{title}**", "", "| sampler | " + " | ".join(header) + " | mean |",
                  "|---|" + "---:|" * (len(header) + 1)]
        for sampler in samplers:
            if not any(f"{sampler}|{sched}|{n}" in rows for sched in schedules for n in steps):
                continue
            stochastic = any(r.get("stochastic") for k, r in rows.items() if k.startswith(f"{sampler}|"))
            name = f"`{sampler}`" + (" *" if stochastic else "")
            average = mean(sampler, field)
            lines.append(f"| {name} | " + " | ".join(cell(sampler, sched, n, field, fmt) for sched in schedules
                                                      for n in steps)
                         + f" | {fmt.format(average) if average is not None else ''} |")
        lines.append("")
    for reason, names in reasons.items():
        lines.append(f"n/a ({', '.join(f'`{n}`' for n in dict.fromkeys(names))}): {reason}.")
    if "reference" in results:
        lines.append(f"The reference images score {results['reference']['geneval']:.2f}.")
    for key, row in rows.items():
        sampler, schedule, n = key.split("|")
        if schedule == "default" and int(n) not in steps and "distance" in row:
            lines.append(f"For the reference's own error: `{sampler}` at {n} steps is {row['distance']:.2f} from it "
                         f"(GenEval {row['geneval']:.2f}).")
    lines.append("")
    return "\n".join(lines)


def write_doc(path: Path, table: str) -> None:
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} ... {END} markers to write the table between")
    head, rest = text.split(START, 1)
    path.write_text(head + START + "\n" + table + END + rest.split(END, 1)[1], encoding="utf-8")


def grid(args: argparse.Namespace, samplers: list[str]) -> Image.Image:
    """Rows samplers, columns step counts, one item (``--grid-item``), each sampler on its own
    (default) schedule, and the reference's image at the top right; pixels enlarged
    ``--grid-scale`` times. Images the run kept are reused; missing ones are drawn."""
    items = prompt_items(args.per_task)
    if not 0 <= args.grid_item < len(items):
        raise SystemExit(f"--grid-item {args.grid_item} is out of range: there are {len(items)} items")
    item, cache = items[args.grid_item], image_cache(args)
    scale, label_width, header = args.grid_scale, 130, 30
    side = 64 * scale
    canvas = Image.new("RGB", (label_width + side * (len(args.steps) + 1), header + side * len(samplers)), "white")
    pen = ImageDraw.Draw(canvas)
    pen.text((4, 4), f'"{item["prompt"].prompt}", seed {item["seed"]}, default schedules', fill="black")
    for c, n in enumerate(args.steps):
        pen.text((label_width + c * side + 4, header - 12), f"{n} steps", fill="black")
    pen.text((label_width + len(args.steps) * side + 4, header - 12), "reference", fill="black")
    reference = reference_images(args, items)[args.grid_item].astype(np.uint8)
    canvas.paste(Image.fromarray(reference).resize((side, side), Image.NEAREST),
                 (label_width + len(args.steps) * side, header))
    pen.text((label_width + len(args.steps) * side + 4, header + side + 4),
             f"{args.reference},\n{args.reference_steps} steps", fill="black")
    for r, sampler in enumerate(tqdm(samplers, desc="grid", unit="sampler")):
        pen.text((4, header + r * side + side // 2 - 6), sampler, fill="black")
        for c, n in enumerate(args.steps):
            cached = cache / f"{sampler}-{n}.npy"
            if cached.exists():  # the run's own image of the item
                image = Image.fromarray(np.load(cached)[args.grid_item])
            else:
                image = draw(load(args.model, sampler, "default"), [item], n)[0]
            canvas.paste(image.resize((side, side), Image.NEAREST), (label_width + c * side, header + r * side))
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes", help="a built-in model name or spec file (default shapes)")
    parser.add_argument("--out", default="benchmarks/results/sampler_quality.json", help="results JSON (resumed)")
    parser.add_argument("--cache", default="runs/sampler-quality", help="folder for the cached reference images")
    parser.add_argument("--samplers", type=lambda s: s.split(","), help="comma-separated (default: every registered)")
    parser.add_argument("--schedules", type=lambda s: s.split(","), default=list(SCHEDULES))
    parser.add_argument("--steps", type=lambda s: [int(n) for n in s.split(",")], default=list(STEPS))
    parser.add_argument("--per-task", type=int, default=3, help="prompt/seed items per GenEval task (default 3)")
    parser.add_argument("--reference", default="dpmpp-2m", help="the reference sampler (default dpmpp-2m)")
    parser.add_argument("--reference-steps", type=int, default=200)
    parser.add_argument("--check", default="dpmpp-2m:100", help="SAMPLER:STEPS, a run whose distance bounds the "
                        "reference's own error (default dpmpp-2m:100, half the reference's steps; '' for none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="only write the table (and grid) from the JSON")
    parser.add_argument("--doc", help="markdown file whose sampler-quality markers receive the table")
    parser.add_argument("--grid", help="write the grid PNG here")
    parser.add_argument("--grid-item", type=int, default=7, help="which item the grid draws (default 7)")
    parser.add_argument("--grid-scale", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    samplers = args.samplers or registered_samplers()
    if args.table:
        results = json.loads(Path(args.out).read_text())
        if "reference" not in results:
            add_reference_score(results, reference_images(args, prompt_items(args.per_task)), prompt_items(args.per_task))
            write(Path(args.out), results)
    else:
        results = run(args)
    table = markdown(results, samplers, args.schedules, args.steps)
    if args.doc:
        write_doc(Path(args.doc), table)
    else:
        print(table)
    if args.grid:
        image = grid(args, samplers)
        sfumato.atomic_write(args.grid, lambda tmp: image.save(tmp, format="PNG"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
