"""The generation flow: prompt -> conditioning -> guided predictor -> scheduler steps -> images.

Every generation task (text-to-image, image-to-image, inpainting, class-conditional and
unconditional) is this one function with different inputs: the blocks of ``sfumato.blocks`` in
order, which a task with another flow composes itself. Its arguments are checked before any
work, against fixed budgets that do not depend on ``[runtime]`` (``MAX_SIDE``, ``MAX_IMAGES``,
``MAX_OUTPUT_PIXELS``); a call within them runs in chunks of at most ``CHUNK_PIXELS``.

A call may give each sample its own seed (``seeds``): every random number a sample uses then
comes from its own generator, in the order a one-sample call with that seed draws them, so batch
generation (``sfumato.batch``) and the server batch samples together without changing any
sample's noise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import blocks, conditioners
from .blocks import ArgumentError, check_labels, condition, encode_prompts, guided_model  # noqa: F401 (their old home)
from .errors import SpecError
from .interfaces import SamplerStep
from .outputs import make_lock
from .sampling import StepCallback, randn, step_noise

if TYPE_CHECKING:
    from .pipeline import Pipeline

#: Largest height and width in pixels (SDXL's 1024 four times over).
MAX_SIDE = 4096
#: Most samples one call makes (prompts x ``num_images``).
MAX_IMAGES = 1024
#: Most pixels one call makes (samples x height x width): 32 megapixels, 384 MiB of decoded
#: float32 images, 96 MiB as one RGB grid.
MAX_OUTPUT_PIXELS = 2**25
#: Samples are denoised and decoded in chunks of at most this many pixels (samples x height x
#: width; at least one sample), so memory stays bounded however many images a call asks for.
#: Each chunk's samples start from their own rows of the call's seeded noise: a deterministic
#: sampler gives the same images in any chunking; a stochastic one draws each chunk's step noise
#: in turn, so a call of several chunks is reproducible from its seed but differs from one batch.
CHUNK_PIXELS = 2**20
#: Seeds are 64-bit: 0 to 2**64 - 1 (``torch.Generator.manual_seed`` wraps negative ones).
MAX_SEED = 2**64 - 1


@dataclass
class GenerationResult:
    """:param images: PIL images, one per sample (or what ``output_type`` asked for: an array, a
        tensor, the latents). :param latents: the final latents ``[B, C, h, w]``.
    :param lock: everything needed to replay the run (see ``sfumato.outputs``).
    :param decoded: the decoded images ``[B, 3, H, W]`` in [-1, 1] before clamping and rounding
        and before inpainting's paste of the kept pixels (what parity checks against other
        libraries compare); None for ``output_type="latent"``."""

    images: Any
    latents: Tensor
    seed: int
    lock: dict[str, Any] = field(default_factory=dict)
    decoded: Tensor | None = None


def to_pil(images: Tensor) -> list[Image.Image]:
    """``[B, 3, H, W]`` in [-1, 1] to PIL images (clamped, rounded to uint8)."""
    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = array.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
    return [Image.fromarray(a if a.shape[-1] != 1 else a[..., 0]) for a in array]


def from_pil(images: list[Image.Image] | Image.Image, size: tuple[int, int] | None = None) -> Tensor:
    """PIL images to ``[B, 3, H, W]`` in [-1, 1], resized to ``size`` (width, height) if given."""
    images = [images] if isinstance(images, Image.Image) else images
    out = []
    for image in images:
        image = image.convert("RGB")
        if size is not None and image.size != size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        out.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1))
    return torch.stack(out)


def check_arguments(
    *, num_images: Any = None, height: Any = None, width: Any = None, steps: Any = None, seed: Any = None,
    conditions: int = 1,
) -> None:
    """Check the numbers of a call before any work: whole numbers, in range, within the budgets.

    Arguments left None are not checked (a caller may not know them yet). ``conditions`` is the
    number of prompts or labels, each of which makes ``num_images`` samples.
    :raises ArgumentError: naming the first wrong argument and its allowed range.
    """
    ranges = {
        "num_images": (num_images, 1, MAX_IMAGES, " (MAX_IMAGES, images per call)"),
        "height": (height, 1, MAX_SIDE, " pixels (MAX_SIDE)"),
        "width": (width, 1, MAX_SIDE, " pixels (MAX_SIDE)"),
        "steps": (steps, 1, None, ""),
        "seed": (seed, 0, MAX_SEED, " (2**64 - 1)"),
    }
    for argument, (value, low, high, unit) in ranges.items():
        if value is None:
            continue
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise ArgumentError(argument, f"{value!r} is not a whole number")
        if value < low or (high is not None and value > high):
            allowed = f"{low} to {high}{unit}" if high is not None else f"at least {low}"
            raise ArgumentError(argument, f"{value} is out of range: it must be {allowed}")
    samples = conditions * num_images if num_images is not None else None
    if samples and height and width and samples * height * width > MAX_OUTPUT_PIXELS:
        most = max(1, MAX_OUTPUT_PIXELS // (height * width))
        raise ArgumentError(
            "num_images", f"{samples} images of {height}x{width} are {samples * height * width:,} pixels, more than "
            f"the {MAX_OUTPUT_PIXELS:,} one call may make (MAX_OUTPUT_PIXELS); ask for at most {most} at this size",
        )
    if samples and samples > MAX_IMAGES:
        raise ArgumentError("num_images", f"{samples} images in all is more than {MAX_IMAGES} per call (MAX_IMAGES)")


def check_model_arguments(pipe: Pipeline, *, steps: int | None = None, height: int | None = None,
                          width: int | None = None) -> None:
    """Check the numbers of a call against the model before any work: ``steps`` at most its
    training timesteps, ``height`` and ``width`` multiples of its autoencoder's downscale.

    :raises ArgumentError: naming the argument and the values that would be right.
    """
    schedule, autoencoder = pipe.schedule, pipe.component("autoencoder")
    if steps is not None and schedule is not None and steps > schedule.num_timesteps:
        raise ArgumentError("steps", f"{steps} is out of range: this model allows 1 to {schedule.num_timesteps} "
                            "(its [diffusion] timesteps)")
    downscale = autoencoder.downscale if autoencoder is not None else 1
    for argument, size in (("height", height), ("width", width)):
        if size is not None and size % downscale:
            lower = size - size % downscale
            raise ArgumentError(argument, f"{size} is not a multiple of {downscale}, the model's downscale: use "
                                + (f"{lower} or {lower + downscale}" if lower else f"{downscale}"))


def lock_arguments(*, prompt: str | list[str] | None, negative_prompt: str | list[str] | None,
                   labels: int | list[int] | None, steps: int | None, seed: int, num_images: int, height: int,
                   width: int, strength: float = 1.0, latents: bool = False, image: bool = False,
                   mask: bool = False) -> dict[str, Any]:
    """The ``arguments`` a call's lock records (and ``sfumato.replay`` accepts back): its keyword
    arguments, with flags for the inputs a lock does not store (explicit latents, an init image, a mask)."""
    return {
        "prompt": prompt, "negative_prompt": negative_prompt, "labels": labels, "steps": steps, "seed": seed,
        "num_images": num_images, "height": height, "width": width, "strength": strength, "latents": latents,
        "image": image, "mask": mask,
    }


#: What ``output_type`` may ask for, as diffusers' pipelines name it.
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@torch.no_grad()
def generate(
    pipe: Pipeline,
    prompt: str | list[str] | None = None,
    *,
    negative_prompt: str | list[str] | None = None,
    labels: int | list[int] | None = None,
    steps: int | None = None,
    seed: int | list[int] = 0,
    seeds: list[int] | None = None,
    num_images: int | None = None,
    height: int | None = None,
    width: int | None = None,
    latents: Tensor | None = None,
    image: Image.Image | Tensor | None = None,
    mask: Image.Image | Tensor | None = None,
    strength: float = 1.0,
    mask_blur: int = 0,
    callback: StepCallback | None = None,
    progress: bool = True,
    guidance_scale: float | None = None,
    num_inference_steps: int | None = None,
    num_images_per_prompt: int | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    output_type: str = "pil",
    **inputs: Any,
) -> GenerationResult:
    """Generate images with the pipeline's components: the blocks of ``sfumato.blocks`` in order,
    with every argument checked before any work.

    :param prompt: one prompt or one per sample; each is repeated ``num_images`` times. With no
        prompt and no labels the run is unconditional.
    :param labels: class labels for class-conditional denoiser (instead of a prompt), or the
        targets of a ``[classifier]`` that steers an unconditional one.
    :param steps: sampling steps, 1 to the model's training timesteps (default: the scheduler's).
    :param seed: 0 to 2**64 - 1; the initial noise of every sample and any step noise come from
        it. A list is ``seeds``.
    :param seeds: one seed per sample (prompts x ``num_images``) instead of ``seed``: each sample's
        noise comes from its own generator, as a one-sample call with its seed draws it, so a sample
        does not depend on the others in the call. Each sample is then that one-sample call, whose
        lock ``lock_arguments`` gives; the call's own lock flags its noise as explicit latents.
        Guidance that draws random numbers of its own (CLIP guidance's cutouts) is given the first
        seed's generator, so its samples do depend on the call's first one.
    :param num_images: samples per prompt or label (default 1).
    :param height: pixels (default: the model's own size, ``sfumato.blocks.native_size``).
    :param width: pixels (default: the model's own size).
    :param latents: initial unit-variance noise ``[B, C, h, w]`` (replaces the seeded noise).
    :param image: an init image (image-to-image, inpainting), PIL or ``[B, 3, H, W]`` in [-1, 1].
    :param mask: white (1) where new content is generated, black (0) where ``image`` is kept.
        The kept pixels are pasted back after decoding (``result.decoded`` is before the paste).
    :param strength: fraction of the trajectory to run for image-to-image (1 = from pure noise).
    :param mask_blur: radius in pixels of the Gaussian blur that softens the mask's edge for the
        paste (0: a hard edge).
    :param callback: called after every step; a call of several chunks (``CHUNK_PIXELS``) calls it
        for each chunk's steps in turn.
    :param guidance_scale: diffusers' name: the scale of the spec's ``cfg`` guidance for this call
        (recorded in the lock's spec); a spec without ``cfg`` gets one first in its guidance.
    :param num_inference_steps: diffusers' name for ``steps``.
    :param num_images_per_prompt: diffusers' name for ``num_images``.
    :param generator: diffusers' generator(s): the seed each was seeded with (``initial_seed``) is
        the call's ``seed``, or for a list, ``seeds`` (so a lock can replay the call).
    :param output_type: ``result.images`` as ``"pil"`` images (default), ``"np"`` ``(B, H, W, 3)``
        or ``"pt"`` ``[B, 3, H, W]`` floats in [0, 1], or ``"latent"`` (the final latents, not decoded).
    :param inputs: inputs for the pipeline's components that declare them in ``call_inputs``
        (``control_image=`` for a ``[[controlnet]]``, SDXL's ``original_size=``; see
        ``sfumato.conditioners``); a keyword no component takes is an ``ArgumentError``.
    :raises ArgumentError: before any work, for an argument out of range or one the model cannot use.
    """
    conditioners.check_inputs(pipe, inputs)
    steps = same_argument("steps", steps, "num_inference_steps", num_inference_steps)
    num_images = same_argument("num_images", num_images, "num_images_per_prompt", num_images_per_prompt)
    num_images = 1 if num_images is None else num_images
    if generator is not None:
        if seeds is not None or seed != 0:
            raise ArgumentError("generator", "give a generator or seed(s), not both")
        seed, seeds = (generator.initial_seed(), None) if isinstance(generator, torch.Generator) else \
            (0, [g.initial_seed() for g in generator])
    if isinstance(seed, (list, tuple)):
        if seeds is not None:
            raise ArgumentError("seed", "give a list of seeds as seed or seeds, not both")
        seed, seeds = 0, list(seed)
    if output_type not in OUTPUT_TYPES:
        raise ArgumentError("output_type", f"{output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")
    if guidance_scale is not None:
        pipe = with_guidance_scale(pipe, guidance_scale)
    denoiser, scheduler, schedule = pipe.component("denoiser"), pipe.component("scheduler"), pipe.schedule
    for name, value in (("[denoiser]", denoiser), ("[scheduler]", scheduler), ("[diffusion]", schedule)):
        if value is None:
            raise SpecError(f"generation needs a {name} table", source=pipe.source)
    native_height, native_width = blocks.native_size(pipe)
    height, width = height or native_height, width or native_width
    prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    label_list = [labels] if isinstance(labels, int) else list(labels or [])
    conditions = max(len(prompts), len(label_list), 1)
    check_arguments(num_images=num_images, height=height, width=width, steps=steps, seed=seed, conditions=conditions)
    batch = conditions * num_images
    check_model_arguments(pipe, steps=steps, height=height, width=width)
    if not 0.0 < strength <= 1.0:
        raise ArgumentError("strength", f"{strength} is out of range: it must be above 0 and at most 1")
    if isinstance(mask_blur, bool) or not isinstance(mask_blur, int) or not 0 <= mask_blur <= 64:
        raise ArgumentError("mask_blur", f"{mask_blur!r} is out of range: it must be a whole number of pixels, 0 to 64")
    if mask is not None and image is None:
        raise ArgumentError("mask", "a mask needs the image it applies to (image=...)")
    if seeds is not None:
        check_seeds(seeds, batch, latents)
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds] if seeds is not None else None
    generator = torch.Generator("cpu").manual_seed(seed if seeds is None else seeds[0])
    cond = blocks.condition(pipe, prompts, negative_prompt, label_list, num_images).to(pipe.device, pipe.dtype)
    sample_prompts = [p for p in prompts for _ in range(num_images)]
    negatives = negative_prompt if isinstance(negative_prompt, list) else [negative_prompt] * len(prompts)
    request = conditioners.ConditioningRequest(
        pipe, sample_prompts, [n for n in negatives for _ in range(num_images)], height, width, inputs)
    cond = conditioners.extra_conditioning(cond, request)
    shape = blocks.latent_shape(pipe, batch, height, width)
    if denoiser.in_channels == 2 * shape[1] + 1 and mask is None:
        raise ArgumentError("mask", f"this denoiser is an inpainting model ({denoiser.in_channels} input channels: the "
                            "latents, the mask and the masked image's latents): give an image and a mask")

    schedule, plan = blocks.sampling_plan(pipe, shape, steps, strength)
    noise = blocks.initial_noise(shape, pipe, generator, generators) if latents is None \
        else latents.to(pipe.device, pipe.dtype)
    if tuple(noise.shape) != shape:
        raise SpecError(f"latents have shape {tuple(noise.shape)}, expected {shape}")
    pixels = pixel_mask = known_mask = None
    if image is not None:
        pixels = image if isinstance(image, Tensor) else from_pil(image, (width, height))
        if tuple(pixels.shape[-2:]) != (height, width):
            raise ArgumentError("image", f"the image is {pixels.shape[-1]}x{pixels.shape[-2]} (width x height), "
                                f"not the {width}x{height} asked for")
        pixels = pixels.to(pipe.device, pipe.dtype)
        if pixels.shape[0] == 1 and batch > 1:
            pixels = pixels.expand(batch, -1, -1, -1)
        if mask is not None:
            pixel_mask = blocks.mask_tensor(mask, height, width).to(pipe.device, pipe.dtype)
            known_mask = blocks.latent_mask(pixel_mask, shape, pipe)

    lock = make_lock(pipe, lock_arguments(  # before sampling: it hashes the weights, which may fail
        prompt=prompt, negative_prompt=negative_prompt, labels=labels, steps=steps, seed=seed, num_images=num_images,
        height=height, width=width, strength=strength, latents=latents is not None or seeds is not None,
        image=image is not None, mask=mask is not None,
    ))
    finals, decoded_parts = [], []
    per_chunk = max(1, CHUNK_PIXELS // (height * width))
    for start in range(0, batch, per_chunk):
        part = slice(start, start + per_chunk)
        x, known, part_mask, extra = blocks.initial_latents(noise[part], plan), None, None, None
        if pixels is not None:
            init = blocks.encode_image(pipe, pixels[part])
            if strength < 1.0:
                x = scheduler.noised(init, noise[part], plan, 0)
            if known_mask is not None:
                rows = pixel_mask if pixel_mask.shape[0] == 1 else pixel_mask[part]
                extra = blocks.inpainting_inputs(pipe, pixels[part], rows.expand(x.shape[0], -1, -1, -1), shape)
                if extra is None:  # a model not trained for inpainting: blend the kept region every step
                    known, part_mask = init, known_mask if known_mask.shape[0] == 1 else known_mask[part]
        step = SamplerStep.for_plan(plan)
        model = blocks.guided_model(pipe, cond.select(part), sample_prompts[part] or None, generator, schedule,
                                    plan, step, extra_channels=extra, request=request)
        # The kept region is noised with the sample's own initial noise at every level, as
        # diffusers' inpainting pipelines do, so it stays one trajectory with the new content.
        sampler, known_noise = scheduler, noise[part] if known is not None else None
        if generators is not None:
            sampler = sample_noise(scheduler, plan, generators[part], x)
        final = blocks.sample(pipe, model, plan, x, generator=generator, step=step, scheduler=sampler, known=known,
                              known_noise=known_noise, mask=part_mask, callback=callback, progress=progress)
        finals.append(final)
        if output_type != "latent":
            decoded_parts.append(blocks.decode(pipe, final))
    final = torch.cat(finals)
    if output_type == "latent":
        return GenerationResult(images=final, latents=final, seed=seed, lock=lock)
    decoded = torch.cat(decoded_parts)
    shown = decoded if pixel_mask is None else blocks.paste_known(decoded, pixels, pixel_mask, mask_blur)
    return GenerationResult(images=output_images(shown, output_type), latents=final, seed=seed, lock=lock,
                            decoded=decoded)


def output_images(decoded: Tensor, output_type: str) -> Any:
    """Decoded ``[B, 3, H, W]`` in [-1, 1] as ``output_type`` asks (diffusers' ``(x / 2 + 0.5)``, clamped)."""
    if output_type == "pil":
        return to_pil(decoded)
    unit = (decoded.float() / 2 + 0.5).clamp(0, 1).cpu()
    return unit if output_type == "pt" else unit.permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)


def same_argument(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """``value`` or its diffusers-named ``alias_value``; both given must agree."""
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise ArgumentError(alias, f"{alias_value} disagrees with {name}={value}: give one of them")
    return alias_value


def with_guidance_scale(pipe: Pipeline, scale: float) -> Pipeline:
    """``pipe`` with the scale of its ``cfg`` guidance set to ``scale`` (a ``cfg`` entry put first
    when the spec has none): a shallow copy sharing every module, whose spec records the scale."""
    from .generation_requests import pipeline_variant  # it builds on this module

    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ArgumentError("guidance_scale", f"{scale!r} is not a number")
    types = [g.spec.type for g in pipe.guidance]
    if "cfg" in types:
        index = types.index("cfg")
        if index:  # pipeline_variant sets the first scaled entry: make cfg's the one it sets
            others = pipe.guidance[:index]
            variant = pipeline_variant(pipe_with_guidance(pipe, pipe.guidance[index:]), None, scale)
            return pipe_with_guidance(variant, others + variant.guidance)
        return pipeline_variant(pipe, None, scale)
    cfg = pipe.registry.build("guidance", {"type": "cfg", "scale": scale})
    return pipe_with_guidance(pipe, [cfg, *pipe.guidance])


def pipe_with_guidance(pipe: Pipeline, guidance: list[Any]) -> Pipeline:
    """A shallow copy of ``pipe`` whose guidance (and spec's) is ``guidance``."""
    pipe.__dict__.setdefault("_weight_hashes", {})  # shared with the copy: weights are hashed once
    variant = copy.copy(pipe)
    variant.guidance = list(guidance)
    variant.spec = pipe.spec.model_copy(update={"guidance": [g.spec for g in guidance]})
    return variant


# -- per-sample seeds -------------------------------------------------------------------------


def check_seeds(seeds: list[int], samples: int, latents: Tensor | None) -> None:
    """``seeds``: one per sample, each a valid seed, and not together with explicit latents."""
    if latents is not None:
        raise ArgumentError("seeds", "give seeds or latents, not both")
    if len(seeds) != samples:
        raise ArgumentError("seeds", f"{len(seeds)} seeds for {samples} samples (prompts x num_images)")
    for value in seeds:
        try:
            check_arguments(seed=value)
        except ArgumentError as exc:
            raise ArgumentError("seeds", exc.problem) from None


def sample_noise(scheduler: Any, plan: Any, generators: list[torch.Generator], x: Tensor) -> Any:
    """The scheduler for samples that each draw from their own generator, in the order
    ``run_sampler`` draws from a one-sample call's generator (every step's noise). A stochastic
    scheduler comes back wrapped with its step noise preset (``PresetStepNoise``)."""
    if not scheduler.stochastic:
        return scheduler
    one = (1, *x.shape[1:])
    noise = torch.cat([step_noise(len(plan), one, g, x.device, x.dtype) for g in generators], dim=1)  # (steps, B, ...)
    return PresetStepNoise(scheduler, noise)


class PresetStepNoise:
    """A stochastic scheduler whose step noise ``[steps, B, ...]`` was drawn in advance, one
    sample's rows from its own generator. ``run_sampler`` sees a deterministic scheduler and
    passes no noise; every other attribute is the wrapped scheduler's."""

    stochastic = False

    def __init__(self, scheduler: Any, noise: Tensor):
        self.scheduler, self.noise = scheduler, noise

    def step(self, model: Any, x: Tensor, plan: Any, i: int, carry: Any = None, noise: Tensor | None = None):
        return self.scheduler.step(model, x, plan, i, carry, self.noise[i])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scheduler, name)
