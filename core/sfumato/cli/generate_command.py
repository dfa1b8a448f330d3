"""``sfumato generate``: the main job, text (or a class label) to PNG, replayable with ``--from``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SpecError
from ..outputs import check_weights, image_grid, read_lock, save_png
from ..pipeline import Pipeline
from ..registry import get_registry

DEFAULT_MODEL = "shapes"


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("generate", help="generate images from a prompt with a built-in model or a spec")
    parser.add_argument("prompt", nargs="?", help="what to draw")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help=f"a built-in model name (default: {DEFAULT_MODEL}; see `sfumato models`)")
    source.add_argument("--spec", help="a pipeline spec file")
    source.add_argument("--from", dest="from_image", metavar="IMAGE.png",
                        help="replay the run recorded in a PNG written by sfumato generate")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.FIELD=VALUE", help="override a spec value")
    parser.add_argument("--negative", help="negative prompt")
    parser.add_argument("--label", type=int, help="class label, for class-conditional models")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the spec's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=1)
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--out", default="sfumato.png", help="output PNG (a grid when several images)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)

    models = sub.add_parser("models", help="list the built-in models")
    models.set_defaults(handler=list_models)


def run(args: argparse.Namespace) -> int:
    registry = get_registry()
    if args.from_image:
        lock = read_lock(args.from_image)
        problems = check_weights(lock)
        if problems:
            raise SpecError(f"{args.from_image}: cannot replay, weights differ from the lock: " + "; ".join(problems))
        arguments = dict(lock["arguments"])
        if arguments.pop("latents", False) or arguments.pop("image", False) or arguments.pop("mask", False):
            raise SpecError(f"{args.from_image}: the run used explicit latents or an init image, which the lock "
                            "does not store; replay it from Python with the same inputs")
        pipe = Pipeline.load(lock["spec"], overrides=args.set or None, registry=registry)
    else:
        if args.prompt is None and args.label is None:
            raise SpecError("give a prompt (or --label for class-conditional models)")
        target = args.spec or args.model or DEFAULT_MODEL
        if args.spec is None:
            target = registry.model(target).spec_path
        pipe = Pipeline.load(target, overrides=args.set or None, registry=registry)
        arguments = {"prompt": args.prompt, "negative_prompt": args.negative, "labels": args.label,
                     "steps": args.steps, "seed": args.seed, "num_images": args.num_images}
        arguments.update({k: v for k, v in (("height", args.height), ("width", args.width)) if v is not None})
    result = pipe(progress=not args.no_progress, **{k: v for k, v in arguments.items() if v is not None})
    image = result.images[0] if len(result.images) == 1 else image_grid(result.images)
    path = save_png(image, args.out, result.lock)
    print(f"wrote {path} ({len(result.images)} image(s), seed {result.seed})")
    return 0


def list_models(args: argparse.Namespace) -> int:
    models = get_registry().models
    if not models:
        print("no built-in models are registered")
    for name, entry in sorted(models.items()):
        print(f"{name:<16} {entry.description} ({entry.plugin})")
    return 0
