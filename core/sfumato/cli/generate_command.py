"""``sfumato generate``: the main job, text (or a class label) to an image, replayable with ``--from``;
image-to-image and inpainting with ``--image``/``--mask``; with ``--prompts FILE``, one image per
line of a prompt file (``sfumato.batch``). A PNG carries the lock and the WebUI's ``parameters`` text.

Every option is checked before any work: the numbers and ``--out`` before the pipeline is loaded,
what depends on the model (a multiple of its downscale, its steps, whether it reads prompts or
labels) before sampling. A wrong value is an error naming its option and the allowed range.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from PIL import Image
from pydantic import ValidationError

from ..batch import BatchSummary, check_batch_folder, line_requests, plan_lines, read_prompt_file, run_batches
from ..errors import SfumatoError, SpecError
from ..generation import (
    MAX_IMAGES, MAX_SIDE, ArgumentError, GenerationResult, check_arguments, generate, lock_arguments,
)
from ..generation_requests import SampleRunner, request_model, validation_messages
from ..outputs import check_output, image_grid, output_format, save_image
from ..pipeline import Pipeline
from ..registry import get_registry
from ..replay import check_generation_task, replay_pipeline
from ..training.distributed import setup_distributed, teardown_distributed
from ..webui_parameters import webui_parameters

DEFAULT_MODEL = "shapes"
DEFAULT_OUT = "sfumato.png"
#: Images per forward with ``--prompts`` unless ``--batch-size`` says otherwise.
DEFAULT_BATCH_SIZE = 8
#: The command line's name of each ``generate`` argument it sets.
OPTIONS = {
    "prompt": "the prompt", "negative_prompt": "--negative", "labels": "--label", "steps": "--steps", "seed": "--seed",
    "num_images": "--num-images", "height": "--height", "width": "--width", "image": "--image", "mask": "--mask",
    "strength": "--strength", "mask_blur": "--mask-blur", "guidance_scale": "--cfg", "seeds": "--seed",
    "control_image": "--control-image",
}
#: ``--strength`` with ``--image`` alone (image-to-image; A1111's "denoising strength") and with
#: ``--mask`` (inpainting regenerates the masked region from pure noise).
IMAGE_STRENGTH, INPAINT_STRENGTH = 0.6, 1.0
#: ``--mask-blur`` default in pixels (A1111's default is 4).
DEFAULT_MASK_BLUR = 4
#: Most pixels of an ``--image`` or ``--mask`` file (decompression bombs are refused before decoding).
MAX_INPUT_PIXELS = MAX_SIDE * MAX_SIDE
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
    parser.add_argument("--cfg", type=float, metavar="SCALE",
                        help="classifier-free guidance scale (the spec's cfg entry; diffusers' guidance_scale)")
    parser.add_argument("--image", metavar="FILE",
                        help="an init image: image-to-image (SDEdit) at --strength, or inpainting with --mask; "
                        "the size defaults to the image's")
    parser.add_argument("--mask", metavar="FILE", help="with --image: inpaint where the mask is white, keep the "
                        "image where it is black (same size as --image); the kept pixels are pasted back")
    parser.add_argument("--strength", type=float, help=f"with --image: the part of the trajectory run, above 0 to 1 "
                        f"(default {IMAGE_STRENGTH}; {INPAINT_STRENGTH} with --mask)")
    parser.add_argument("--mask-blur", type=int, help=f"with --mask: blur radius in pixels of the pasted mask's edge, "
                        f"0 to 64 (default {DEFAULT_MASK_BLUR})")
    parser.add_argument("--control-image", action="append", metavar="FILE",
                        help="the control image of a [[controlnet]] (resized to the output size); repeat it once "
                        "per ControlNet, in the spec's order")
    parser.add_argument("--out-dir", metavar="DIR",
                        help="also write each image as DIR/NNNNN-SEED.png with its own lock (numbered after those "
                        "there); image k of a call uses seed + k, so each file replays alone")
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
def named_options(given: dict[str, Any], replayed: str | None, sized_by_image: bool = False) -> Iterator[None]:
    """Name a wrong ``generate`` argument as the user wrote it: its option when given on the
    command line (``--image`` for the size it gave), the lock's argument when replayed, else the
    spec's (a task's default size)."""
    try:
        yield
    except ArgumentError as exc:
        if exc.argument in ("height", "width") and sized_by_image:
            name = f"--image (its {exc.argument}; give --height and --width to resize it)"
        elif exc.argument in given:
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
        ("guidance_scale", args.cfg),
    ) if value is not None}
    with named_options(given, None):
        check_arguments(**{k: given.get(k) for k in ("num_images", "height", "width", "steps", "seed")})
    given.update(image_options(args))
    try:
        out = check_output(args.out or DEFAULT_OUT, overwrite=args.overwrite)
    except SpecError as exc:
        raise SpecError(f"--out {exc}") from None
    folder = check_out_dir(args.out_dir) if args.out_dir is not None else None
    if folder is not None:
        base = given.pop("seed", 0)
        given["seeds"] = [(base + k) % 2**64 for k in range(given.get("num_images") or 1)]
    result = replay(args, given) if args.from_image else generate_new(args, given)
    model = Path(args.spec).stem if args.spec else (args.model or (None if args.from_image else DEFAULT_MODEL))
    image = result.images[0] if len(result.images) == 1 else image_grid(result.images)
    try:
        path = save_image(image, out, result.lock, parameters=png_parameters(out, result.lock, model))
        written = write_numbered(folder, result, given, model) if folder is not None else []
    except SfumatoError as exc:
        raise SpecError(f"{'--out-dir' if folder is not None and out.exists() else '--out'} {exc}") from None
    seeds = f"seeds {given['seeds'][0]} to {given['seeds'][-1]}" if "seeds" in given else f"seed {result.seed}"
    print(f"wrote {path} ({len(result.images)} image(s), {seeds})"
          + (f" and {len(written)} file(s) in {folder}" if written else ""))
    return 0


def png_parameters(out: Path, lock: dict[str, Any], model: str | None) -> str | None:
    """The WebUI ``parameters`` text of a PNG output (None for JPEG and WebP, whose EXIF comment holds the lock)."""
    return webui_parameters(lock, get_registry(), model) if output_format(out) == "PNG" else None


def image_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--image``, ``--mask``, ``--strength``, ``--mask-blur`` and ``--cfg`` checked and read
    (before the pipeline loads): the ``generate`` arguments they give."""
    options: dict[str, Any] = {}
    if getattr(args, "control_image", None):
        images = [read_input_image("--control-image", path) for path in args.control_image]
        options["control_image"] = images[0] if len(images) == 1 else images
    if args.cfg is not None and not math.isfinite(args.cfg):
        raise SpecError(f"--cfg: {args.cfg} is not a finite number (classifier-free guidance scale, e.g. 7.5)")
    for option, value in (("--mask", args.mask), ("--strength", args.strength), ("--mask-blur", args.mask_blur)):
        if value is not None and args.image is None:
            raise SpecError(f"{option}: only with --image FILE (the image to change or inpaint)")
    if args.mask_blur is not None and args.mask is None:
        raise SpecError("--mask-blur: only with --mask FILE (it softens the edge of the pasted mask)")
    if args.image is None:
        return options
    if args.from_image is not None:
        raise SpecError("--image: not with --from (a lock does not hold its init image)")
    if args.strength is not None and not 0.0 < args.strength <= 1.0:
        raise SpecError(f"--strength: {args.strength} is out of range: it must be above 0 and at most 1")
    if args.mask_blur is not None and not 0 <= args.mask_blur <= 64:
        raise SpecError(f"--mask-blur: {args.mask_blur} is out of range: it must be 0 to 64 pixels")
    image = read_input_image("--image", args.image)
    options.update(image=image, strength=args.strength if args.strength is not None else
                   INPAINT_STRENGTH if args.mask is not None else IMAGE_STRENGTH)
    if args.mask is not None:
        mask = read_input_image("--mask", args.mask)
        if mask.size != image.size:
            raise SpecError(f"--mask: {args.mask} is {mask.width}x{mask.height} but --image is "
                            f"{image.width}x{image.height}: give a mask of the image's size")
        options.update(mask=mask.convert("L"), mask_blur=DEFAULT_MASK_BLUR if args.mask_blur is None else args.mask_blur)
    if args.height is None and args.width is None:
        options.update(height=image.height, width=image.width)
    elif args.height is None or args.width is None:
        raise SpecError("--height and --width: give both with --image, or neither (the image's size)")
    if (args.height, args.width) != (None, None) and args.mask is not None:
        options["mask"] = options["mask"].resize((args.width, args.height), Image.Resampling.NEAREST)
    return options


def read_input_image(option: str, path: str) -> Image.Image:
    """An image file, decoded: refused (naming ``option``) when missing, not an image, or too large."""
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            if opened.width * opened.height > MAX_INPUT_PIXELS:
                raise SpecError(f"{option}: {path} is {opened.width}x{opened.height}, more than "
                                f"{MAX_SIDE}x{MAX_SIDE} pixels")
            opened.load()
            return opened.convert("RGB") if opened.mode not in ("RGB", "L") else opened.copy()
    except FileNotFoundError:
        raise SpecError(f"{option}: {path} does not exist") from None
    except IsADirectoryError:
        raise SpecError(f"{option}: {path} is a folder, not an image file") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise SpecError(f"{option}: {path} is not an image PIL can read ({type(exc).__name__})") from None


def check_out_dir(folder: str) -> Path:
    """``--out-dir``: a folder (created if missing) that can be written."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise SpecError(f"--out-dir: {folder} is a file, not a folder")
    probe = path if path.exists() else next((p for p in path.absolute().parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SpecError(f"--out-dir: cannot write into {probe} (permission denied)")
    return path


def write_numbered(folder: Path, result: GenerationResult, given: dict[str, Any], model: str | None) -> list[Path]:
    """Each image of ``result`` as ``folder/NNNNN-SEED.png``, numbered after the highest number
    already there, with the lock of the one-sample call it is (its own seed)."""
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in folder.iterdir() if (m := re.match(r"(\d{5,})-", p.name))]
    first_number = max(taken) + 1 if taken else 0
    arguments = result.lock["arguments"]
    written = []
    for k, (image, seed) in enumerate(zip(result.images, given["seeds"])):
        lock = {**result.lock, "arguments": lock_arguments(
            prompt=arguments["prompt"], negative_prompt=arguments["negative_prompt"], labels=arguments["labels"],
            steps=arguments["steps"], seed=seed, num_images=1, height=arguments["height"], width=arguments["width"],
            strength=arguments["strength"], image=arguments["image"], mask=arguments["mask"])}
        path = folder / f"{first_number + k:05d}-{seed}.png"
        written.append(save_image(image, path, lock, parameters=webui_parameters(lock, get_registry(), model)))
    return written


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
    with named_options(given, None, sized_by_image=args.image is not None and args.height is None):
        result = pipe(progress=not args.no_progress, **given)
    if not isinstance(result, GenerationResult):
        raise SpecError(f"{target}: task {task.type_name()!r} made no images; `sfumato generate` runs generation tasks")
    return result


def replay(args: argparse.Namespace, given: dict[str, Any]) -> GenerationResult:
    """Repeat the call recorded in ``--from``'s lock, with the options given replacing its values."""
    pipe, arguments, notes = replay_pipeline(args.from_image, args.set, get_registry())
    for note in notes:
        print(f"sfumato: note: {note}; the replay uses the weights --set names", file=sys.stderr)
    with named_options(given, args.from_image), pipe.spec.runtime.call_context(pipe.device):
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
