"""``sfumato generate``: the main job, text (or a class label) to an image, replayable with ``--from``;
with ``--prompts FILE``, one image per line of a prompt file (``sfumato.batch``).

Every option is checked before any work: the numbers and ``--out`` before the pipeline is loaded,
what depends on the model (a multiple of its downscale, its steps, whether it reads prompts or
labels) before sampling. A wrong value is an error naming its option and the allowed range.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pydantic import ValidationError

from ..batch import BatchSummary, check_batch_folder, line_requests, plan_lines, read_prompt_file, run_batches
from ..errors import SfumatoError, SpecError
from ..generation import MAX_IMAGES, MAX_SIDE, ArgumentError, GenerationResult, check_arguments, generate
from ..generation_requests import SampleRunner, request_model, validation_messages
from ..outputs import check_output, image_grid, save_image
from ..pipeline import Pipeline
from ..registry import get_registry
from ..replay import check_generation_task, replay_pipeline
from ..training.distributed import setup_distributed, teardown_distributed

DEFAULT_MODEL = "shapes"
DEFAULT_OUT = "sfumato.png"
#: Images per forward with ``--prompts`` unless ``--batch-size`` says otherwise.
DEFAULT_BATCH_SIZE = 8
#: The command line's name of each ``generate`` argument it sets.
OPTIONS = {
    "prompt": "the prompt", "negative_prompt": "--negative", "labels": "--label", "steps": "--steps", "seed": "--seed",
    "num_images": "--num-images", "height": "--height", "width": "--width",
}
#: The option that sets each field of a prompt file's lines for every line.
LINE_OPTIONS = {"negative": "--negative", "label": "--label", "steps": "--steps", "height": "--height",
                "width": "--width"}


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("generate", help="generate images from a prompt with a built-in model or a spec")
    parser.add_argument("prompt", nargs="?", help="what to draw (with --from: replaces the recorded prompt)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help=f"a built-in model name (default: {DEFAULT_MODEL}; see `sfumato models`)")
    source.add_argument("--spec", help="a pipeline spec file")
    source.add_argument("--from", dest="from_image", metavar="IMAGE",
                        help="replay the run recorded in an image written by sfumato generate; the options given "
                        "with it (prompt, --seed, --steps, --set, ...) replace the recorded ones")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.FIELD=VALUE", help="override a spec value")
    parser.add_argument("--sampler", metavar="NAME",
                        help='a sampler by any name tools give it: "DPM++ 2M Karras", "Euler a", dpmpp_2m, heun '
                        "(docs/schedulers.md; a --set scheduler.* still wins)")
    parser.add_argument("--schedule", metavar="NAME", help="a sigma schedule for --sampler: karras, exponential, beta, ...")
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                        help="apply a LoRA file (.safetensors) at SCALE (default 1) after the spec's [[adapters]]; "
                        "repeatable; the image's lock records each with its file's hash")
    parser.add_argument("--negative", help="negative prompt (text models)")
    parser.add_argument("--label", type=int, help="class label, for class-conditional models")
    parser.add_argument("--steps", type=int,
                        help="sampling steps, 1 to the model's training timesteps (default: the spec's)")
    parser.add_argument("--seed", type=int, help="0 to 2**64 - 1 (default: 0)")
    parser.add_argument("--num-images", type=int, help=f"1 to {MAX_IMAGES} (default: 1)")
    parser.add_argument("--height", type=int, help=f"pixels, up to {MAX_SIDE}, a multiple of the model's downscale")
    parser.add_argument("--width", type=int, help=f"pixels, up to {MAX_SIDE}, a multiple of the model's downscale")
    parser.add_argument("--prompts", metavar="FILE",
                        help="one image per line of FILE: text (a prompt per line) or .jsonl (an object per line: "
                        "prompt, negative, label, seed, steps, height, width, guidance, scheduler); the options "
                        "above are every line's defaults and --seed is the base seed (a line's seed is its own, "
                        "else --seed + its line number); writes --out DIR/NNNNNN.png and DIR/manifest.jsonl, "
                        "skips lines already made; under torchrun the lines are shared between the processes")
    parser.add_argument("--batch-size", type=int, help=f"with --prompts: lines per forward, 1 to {MAX_IMAGES} "
                        f"(default {DEFAULT_BATCH_SIZE}); a line's bytes depend on it")
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="with --prompts: run the batches on a Ray cluster (auto: the one `ray start --head` runs "
                        "here; local: a new one; ray://HOST:10001); --out must be a folder every node sees (the ray "
                        "extra)")
    parser.add_argument("--ray-workers", type=int, help="with --ray: Ray actors, each holding the pipeline (default 2)")
    parser.add_argument("--ray-gpus", type=float, help="with --ray: GPUs per actor (default 0)")
    parser.add_argument("--out", help=f"output image, .png, .jpg/.jpeg or .webp by its extension (a grid when several "
                        f"images; default {DEFAULT_OUT}); with --prompts, the output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists; with --prompts, make again the lines made with another lock")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)

    models = sub.add_parser("models", help="list the built-in models")
    models.set_defaults(handler=list_models)


@contextmanager
def named_options(given: dict[str, Any], replayed: str | None) -> Iterator[None]:
    """Name a wrong ``generate`` argument as the user wrote it: its option when given on the
    command line, the lock's argument when replayed, else the spec's (a task's default size)."""
    try:
        yield
    except ArgumentError as exc:
        if exc.argument in given:
            name = OPTIONS[exc.argument]
        else:
            name = f"{replayed}: the lock's {exc.argument}" if replayed else exc.argument
        raise SpecError(f"{name}: {exc.problem}") from None


def run(args: argparse.Namespace) -> int:
    if args.lora:  # checked now; every pipeline this command builds then applies them (sfumato.adapter)
        from ..adapter import extra_adapters, lora_option

        with extra_adapters([lora_option(text, get_registry()) for text in args.lora]):
            return run(argparse.Namespace(**{**vars(args), "lora": []}))
    if args.sampler is not None or args.schedule is not None:
        args = argparse.Namespace(**{**vars(args), "sampler": None, "schedule": None,
                                     "set": sampler_overrides(args.sampler, args.schedule) + list(args.set)})
    if args.prompts is not None:
        return run_prompt_file(args)
    for option, value in (("--batch-size", args.batch_size), ("--ray", args.ray), ("--ray-workers", args.ray_workers),
                          ("--ray-gpus", args.ray_gpus)):
        if value is not None:
            raise SpecError(f"{option}: only with --prompts FILE (one image per line of a prompt file)")
    given = {name: value for name, value in (
        ("prompt", args.prompt), ("negative_prompt", args.negative), ("labels", args.label), ("steps", args.steps),
        ("seed", args.seed), ("num_images", args.num_images), ("height", args.height), ("width", args.width),
    ) if value is not None}
    with named_options(given, None):
        check_arguments(**{k: given.get(k) for k in ("num_images", "height", "width", "steps", "seed")})
    try:
        out = check_output(args.out or DEFAULT_OUT, overwrite=args.overwrite)
    except SpecError as exc:
        raise SpecError(f"--out {exc}") from None
    result = replay(args, given) if args.from_image else generate_new(args, given)
    image = result.images[0] if len(result.images) == 1 else image_grid(result.images)
    try:
        path = save_image(image, out, result.lock)
    except SfumatoError as exc:
        raise SpecError(f"--out {exc}") from None
    print(f"wrote {path} ({len(result.images)} image(s), seed {result.seed})")
    return 0


def sampler_overrides(sampler: str | None, schedule: str | None) -> list[str]:
    """``--sampler`` / ``--schedule`` as ``--set scheduler.*`` overrides (the type first, so a type
    change keeps the fields both samplers share), through the registry's sampler names."""
    if sampler is None:
        raise SpecError("--schedule: give it with --sampler (a sampler by name, e.g. --sampler euler)")
    fields = get_registry().resolve_sampler(sampler, schedule)
    ordered = sorted(fields.items(), key=lambda item: item[0] != "type")
    return [f"scheduler.{key}={json.dumps(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else value}"
            for key, value in ordered]


def load_generation_pipeline(args: argparse.Namespace) -> tuple[Pipeline, str]:
    """``(pipeline, what it was loaded from)`` for ``--spec``, ``--model`` or the default model,
    with ``--set``; a spec whose task trains is refused."""
    registry = get_registry()
    target = args.spec or args.model or DEFAULT_MODEL
    if args.spec is None:
        target = registry.model(target).spec_path
    pipe = Pipeline.load(target, overrides=args.set or None, registry=registry)
    task = pipe.component("task")
    if task is not None:
        check_generation_task({"task": task.type_name()}, registry, str(target))
    return pipe, str(target)


def generate_new(args: argparse.Namespace, given: dict[str, Any]) -> GenerationResult:
    """Run the spec's (or the built-in model's) task with the options given."""
    pipe, target = load_generation_pipeline(args)
    task = pipe.component("task")
    with named_options(given, None):
        result = pipe(progress=not args.no_progress, **given)
    if not isinstance(result, GenerationResult):
        raise SpecError(f"{target}: task {task.type_name()!r} made no images; `sfumato generate` runs generation tasks")
    return result


def replay(args: argparse.Namespace, given: dict[str, Any]) -> GenerationResult:
    """Repeat the call recorded in ``--from``'s lock, with the options given replacing its values."""
    pipe, arguments, notes = replay_pipeline(args.from_image, args.set, get_registry())
    for note in notes:
        print(f"sfumato: note: {note}; the replay uses the weights --set names", file=sys.stderr)
    with named_options(given, args.from_image), pipe.spec.runtime.autocast_context(pipe.device):
        return generate(pipe, progress=not args.no_progress, **{**arguments, **given})


def run_prompt_file(args: argparse.Namespace) -> int:
    """``--prompts FILE``: every line checked (the file, then against the model) before any
    work, then the pending lines made in batches, shared between ``torchrun``'s processes."""
    if args.from_image is not None:
        raise SpecError("give --from IMAGE or --prompts FILE, not both")
    if args.prompt is not None:
        raise SpecError(f"give a prompt or --prompts FILE, not both (got the prompt {args.prompt[:40]!r})")
    if args.num_images is not None:
        raise SpecError("--num-images: with --prompts every line makes one image; repeat a line (with its own "
                        "seed) for more")
    batch_size = DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size
    with named_options({"seed": args.seed}, None):
        check_arguments(seed=args.seed)
    if not 1 <= batch_size <= MAX_IMAGES:
        raise SpecError(f"--batch-size: {batch_size} is out of range: it must be 1 to {MAX_IMAGES} (MAX_IMAGES)")
    defaults = {field: getattr(args, field) for field in LINE_OPTIONS if getattr(args, field) is not None}
    model = request_model(get_registry())
    try:
        model.model_validate(defaults)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = LINE_OPTIONS.get(str(first["loc"][0]), str(first["loc"][0]))
        raise SpecError(f"{option}: {validation_messages(exc)[0].split(': ', 1)[1]}") from None
    folder = check_batch_folder(args.out)
    requests = line_requests(read_prompt_file(args.prompts), model, defaults, args.prompts)
    if args.ray is not None or args.ray_workers is not None or args.ray_gpus is not None:
        return run_prompt_file_on_ray(args, folder, requests, batch_size)
    context = setup_distributed("auto")
    try:
        runner = SampleRunner(load_generation_pipeline(args)[0])
        planned = plan_lines(runner, requests, args.seed or 0, args.prompts)
        summary = run_batches(runner, planned, folder, batch_size=batch_size, overwrite=args.overwrite,
                              context=context, progress=not args.no_progress)
    finally:
        teardown_distributed(context)
    if context.is_main:
        print_summary(summary, folder)
    return 0


def run_prompt_file_on_ray(args: argparse.Namespace, folder: Path, requests: list, batch_size: int) -> int:
    """``--prompts`` with ``--ray``: planned here, the batches made by Ray actors (``sfumato.batch_ray``)."""
    if args.ray is None:
        raise SpecError("--ray-workers and --ray-gpus need --ray ADDRESS")
    workers = 2 if args.ray_workers is None else args.ray_workers
    gpus = 0.0 if args.ray_gpus is None else args.ray_gpus
    if workers < 1:
        raise SpecError(f"--ray-workers: {workers} is out of range: it must be at least 1")
    if not 0 <= gpus <= 64:  # also refuses nan
        raise SpecError(f"--ray-gpus: {gpus} is out of range: it must be 0 to 64 (GPUs per actor; 0.5 shares one)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SpecError("--ray: run it as one process; Ray starts the workers (not under torchrun)")
    try:
        from ..batch_ray import run_batches_on_ray
    except ImportError as exc:
        raise SpecError(f"--ray needs Ray ({exc.name} is not installed): pip install 'sfumato[ray]'") from None
    runner = SampleRunner(load_generation_pipeline(args)[0])
    planned = plan_lines(runner, requests, args.seed or 0, args.prompts)
    summary = run_batches_on_ray(runner, planned, folder, address=args.ray, workers=workers, gpus=gpus,
                                 batch_size=batch_size, overwrite=args.overwrite, progress=not args.no_progress)
    print_summary(summary, folder)
    return 0


def print_summary(summary: BatchSummary, folder: Path) -> None:
    print(f"wrote {summary.written} image(s) to {folder} ({summary.skipped} already there); "
          f"manifest {summary.manifest}")


def list_models(args: argparse.Namespace) -> int:
    models = get_registry().models
    if not models:
        print("no built-in models are registered")
    for name, entry in sorted(models.items()):
        print(f"{name:<16} {entry.description} ({entry.plugin})")
    return 0
