"""``sfumato generate``: the main job, text (or a class label) to an image, replayable with ``--from``.

Every option is checked before any work: the numbers and ``--out`` before the pipeline is loaded,
what depends on the model (a multiple of its downscale, its steps, whether it reads prompts or
labels) before sampling. A wrong value is an error naming its option and the allowed range.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import SfumatoError, SpecError
from ..generation import MAX_IMAGES, MAX_SIDE, ArgumentError, GenerationResult, check_arguments, generate
from ..outputs import check_output, image_grid, save_image
from ..pipeline import Pipeline
from ..registry import get_registry
from ..replay import check_generation_task, replay_pipeline

DEFAULT_MODEL = "shapes"
#: The command line's name of each ``generate`` argument it sets.
OPTIONS = {
    "prompt": "the prompt", "negative_prompt": "--negative", "labels": "--label", "steps": "--steps", "seed": "--seed",
    "num_images": "--num-images", "height": "--height", "width": "--width",
}


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
    parser.add_argument("--negative", help="negative prompt (text models)")
    parser.add_argument("--label", type=int, help="class label, for class-conditional models")
    parser.add_argument("--steps", type=int,
                        help="sampling steps, 1 to the model's training timesteps (default: the spec's)")
    parser.add_argument("--seed", type=int, help="0 to 2**64 - 1 (default: 0)")
    parser.add_argument("--num-images", type=int, help=f"1 to {MAX_IMAGES} (default: 1)")
    parser.add_argument("--height", type=int, help=f"pixels, up to {MAX_SIDE}, a multiple of the model's downscale")
    parser.add_argument("--width", type=int, help=f"pixels, up to {MAX_SIDE}, a multiple of the model's downscale")
    parser.add_argument("--out", default="sfumato.png",
                        help="output image, .png, .jpg/.jpeg or .webp by its extension (a grid when several images)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
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
    given = {name: value for name, value in (
        ("prompt", args.prompt), ("negative_prompt", args.negative), ("labels", args.label), ("steps", args.steps),
        ("seed", args.seed), ("num_images", args.num_images), ("height", args.height), ("width", args.width),
    ) if value is not None}
    with named_options(given, None):
        check_arguments(**{k: given.get(k) for k in ("num_images", "height", "width", "steps", "seed")})
    try:
        out = check_output(args.out, overwrite=args.overwrite)
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


def generate_new(args: argparse.Namespace, given: dict[str, Any]) -> GenerationResult:
    """Run the spec's (or the built-in model's) task with the options given."""
    registry = get_registry()
    target = args.spec or args.model or DEFAULT_MODEL
    if args.spec is None:
        target = registry.model(target).spec_path
    pipe = Pipeline.load(target, overrides=args.set or None, registry=registry)
    task = pipe.component("task")
    if task is not None:
        check_generation_task({"task": task.type_name()}, registry, str(target))
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


def list_models(args: argparse.Namespace) -> int:
    models = get_registry().models
    if not models:
        print("no built-in models are registered")
    for name, entry in sorted(models.items()):
        print(f"{name:<16} {entry.description} ({entry.plugin})")
    return 0
