"""``sfumato eval geneval``: generate the GenEval-style prompt set with a text-to-image model,
detect the shapes in every image and score it (the rules are in ``geneval``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import sfumato
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from .commands import add_model_arguments, format_table, load_model, model_name, positive_int, results_file, write_json
from .geneval import TASKS, GenEvalPrompt, evaluate, prompt_set, summarise
from .shapes_detector import detect_shapes

#: The detector is reliable from this image side up (see ``shapes_detector``).
MIN_RELIABLE_SIDE = 48

PASS_COLOR, FAIL_COLOR = (40, 170, 70), (220, 40, 40)


def run_geneval(pipe: sfumato.Pipeline, prompts: list[GenEvalPrompt], images_per_prompt: int = 4, seed: int = 0,
                progress: bool = True) -> tuple[dict[str, Any], list[Image.Image]]:
    """Generate ``images_per_prompt`` images per prompt (prompt ``i`` with seed ``seed + i``),
    score each; returns the report (``tasks``, ``overall``, ``images``) and the images."""
    records, images = [], []
    for i, prompt in enumerate(tqdm(prompts, desc="geneval", unit="prompt", disable=not progress)):
        result = pipe(prompt.prompt, seed=seed + i, num_images=images_per_prompt, progress=False)
        for k, image in enumerate(result.images):
            objects = detect_shapes(image)
            judgement = evaluate(prompt, objects)
            records.append({"task": prompt.task, "prompt": prompt.prompt, "seed": seed + i, "index": k,
                            "passed": judgement.passed, "reason": judgement.reason,
                            "detected": [{key: o[key] for key in ("shape", "color", "center")} for o in objects]})
            images.append(image)
    report = summarise([r["task"] for r in records], [r["passed"] for r in records])
    for task, figures in report["tasks"].items():
        figures["prompts"] = sum(p.task == task for p in prompts)
    report["images"] = records
    return report, images


def marked_grid(images: list[Image.Image], passed: list[bool], columns: int) -> Image.Image:
    """The images in a grid, each framed green when it passed and red when it failed."""
    border = max(2, images[0].width // 24)
    framed = [ImageOps.expand(image.convert("RGB"), border=border, fill=PASS_COLOR if ok else FAIL_COLOR)
              for image, ok in zip(images, passed)]
    return sfumato.image_grid(framed, columns=min(columns, len(framed)))


def report_table(report: dict[str, Any]) -> str:
    rows = [[task, f["prompts"], f["images"], f["accuracy"]] for task, f in report["tasks"].items()]
    rows.append(["overall (mean of tasks)", "", "", report["overall"]])
    return format_table(["task", "prompts", "images", "accuracy"], rows)


def run(args: argparse.Namespace) -> int:
    prompts = prompt_set(args.prompt_seed)
    if args.tasks:
        unknown = sorted(set(args.tasks) - set(TASKS))
        if unknown:
            raise sfumato.SpecError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
        prompts = [p for p in prompts if p.task in args.tasks]
    pipe = load_model(args)
    report, images = run_geneval(pipe, prompts, args.images_per_prompt, args.seed, progress=not args.no_progress)
    side = min(images[0].size)
    if side < MIN_RELIABLE_SIDE:
        print(f"warning: the images are {side} px; the shapes detector is reliable from {MIN_RELIABLE_SIDE} px, "
              "so these scores understate the model", file=sys.stderr)
    print(report_table(report))
    report = {"benchmark": "geneval-shapes", "model": model_name(args), "overrides": args.set, "seed": args.seed,
              "prompt_seed": args.prompt_seed, "images_per_prompt": args.images_per_prompt,
              "image_size": list(images[0].size), **report}
    if args.out:
        write_json(args.out, report)
    if args.grid:
        columns = args.images_per_prompt * max(1, 8 // args.images_per_prompt)
        grid = marked_grid(images, [r["passed"] for r in report["images"]], columns)
        sfumato.atomic_write(args.grid, lambda tmp: grid.save(tmp, format="PNG"))
        print(f"wrote {args.grid}")
    return 0


def add_geneval_command(cli: Any) -> None:
    parser = cli.add_parser("geneval", help="GenEval-style compositional score of a text-to-image model on shapes",
                            description="Generate the shapes prompt set (object, two objects, counting, colours, "
                            "position, colour attribution), detect the shapes and score each image.")
    add_model_arguments(parser)
    parser.add_argument("--images-per-prompt", type=positive_int, default=4, metavar="N",
                        help="images per prompt (default 4)")
    parser.add_argument("--prompt-seed", type=int, default=0,
                        help="seed of the prompt set's colour choices (default 0: the reported set)")
    parser.add_argument("--task", dest="tasks", action="append", metavar="TASK",
                        help=f"only this task (repeatable): {', '.join(TASKS)}")
    parser.add_argument("--grid", metavar="GRID.png", type=results_file, help="write every image in a grid, framed green (pass) or red")
    parser.set_defaults(handler=run)
