"""The generation flow: prompt -> conditioning -> guided predictor -> scheduler steps -> images.

Every generation task (text-to-image, image-to-image, inpainting, class-conditional and
unconditional) is this one function with different inputs. Its arguments are checked before any
work, against fixed budgets that do not depend on ``[runtime]`` (``MAX_SIDE``, ``MAX_IMAGES``,
``MAX_OUTPUT_PIXELS``); a call within them runs in chunks of at most ``CHUNK_PIXELS``.

A call may give each sample its own seed (``seeds``): every random number a sample uses then
comes from its own generator, in the order a one-sample call with that seed draws them, so batch
generation (``sfumato.batch``) and the server batch samples together without changing any
sample's noise.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .conditioning import Conditioning
from .errors import SamplingError, SpecError
from .formulation import Formulation
from .interfaces import GuidanceContext, SamplerStep, SamplingPlan, bind_predictor
from .outputs import make_lock
from .sampling import StepCallback, randn, run_sampler, step_noise

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


class ArgumentError(SpecError):
    """An argument of ``generate`` is wrong. ``argument`` is its Python name (``num_images``) so a
    caller with other names for it (the CLI's ``--num-images``) can name its own; ``problem``
    says what is wrong and what would be right."""

    def __init__(self, argument: str, problem: str):
        self.argument, self.problem = argument, problem
        super().__init__(f"{argument}: {problem}")


@dataclass
class GenerationResult:
    """:param images: PIL images, one per sample. :param latents: the final latents ``[B, C, h, w]``.
    :param lock: everything needed to replay the run (see ``sfumato.outputs``).
    :param decoded: the decoded images ``[B, 3, H, W]`` in [-1, 1] before clamping and rounding
    (what parity checks against other libraries compare)."""

    images: list[Image.Image]
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


def encode_prompts(pipe: Pipeline, prompts: list[str], negative: list[str]) -> Conditioning:
    """Text conditioning with its negative counterpart, both from the pipeline's text encoder."""
    encoder = pipe.component("text_encoder")
    positive, negative_out = encoder.encode(prompts), encoder.encode(negative)
    return Conditioning(
        tokens=positive.tokens, pooled=positive.pooled, mask=positive.mask,
        negative=Conditioning(tokens=negative_out.tokens, pooled=negative_out.pooled, mask=negative_out.mask),
    )


def check_labels(labels: list[Any], num_classes: int | None) -> None:
    """Requested class labels must be classes of the denoiser (checked on the host, once, before
    sampling: an out-of-range label would otherwise fail as an index error inside the class
    embedding, or silently ask for the null class, which is label ``num_classes``)."""
    bad = []
    for label in labels:
        try:
            value = operator.index(label)  # ints, numpy and 0-d torch integers; not floats
        except TypeError:
            bad.append(label)
            continue
        if value < 0 or (num_classes is not None and value >= num_classes):
            bad.append(value)
    if bad:
        known = f"integers 0 to {num_classes - 1}" if num_classes is not None else "non-negative integers"
        raise SpecError(f"labels {bad} are not classes of this model: its labels are {known}")


def condition(pipe: Pipeline, prompts: list[str], negative_prompt: str | list[str | None] | None,
              labels: list[Any], num_images: int) -> Conditioning:
    """The call's conditioning, ``num_images`` rows per prompt or label, with its negative.

    Prompts need a text encoder and labels a class-conditional denoiser (or a ``[classifier]`` to
    steer); a negative prompt needs a prompt. With neither (unconditional generation) a text model
    gets the empty prompt, what condition dropout trained as "no condition", and the negative is
    the same conditioning, so classifier-free guidance returns the unconditional prediction.
    """
    denoiser, encoder = pipe.component("denoiser"), pipe.component("text_encoder")
    classes = getattr(denoiser, "num_classes", None)
    if prompts and labels:
        raise ArgumentError("labels", "give a prompt or labels, not both")
    if negative_prompt is not None and not prompts:
        raise ArgumentError("negative_prompt", "a negative prompt needs a prompt; a class-conditional or "
                            "unconditional run's negative is the model's own unconditional prediction")
    if prompts:
        if encoder is None:
            raise ArgumentError("prompt", "this model has no [text_encoder] to read a prompt"
                                + ("; it is class-conditional: give labels instead" if classes else ""))
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) or negative_prompt is None \
            else list(negative_prompt)
        if len(negatives) != len(prompts):
            raise ArgumentError("negative_prompt", f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        return encode_prompts(pipe, prompts, ["" if n is None else n for n in negatives]).repeat(num_images)
    if labels:
        classifier = pipe.component("classifier")
        if classes is None and classifier is None:
            raise ArgumentError("labels", "this model is not class-conditional (its [denoiser] has no classes and "
                                "the spec has no [classifier] to steer)" + ("; give a prompt instead" if encoder else ""))
        check_labels(labels, classes if classes is not None else classifier.num_classes)
        labels_t = torch.tensor(labels, device=pipe.device).repeat_interleave(num_images)
        null = denoiser.null_label
        return Conditioning(labels=labels_t, negative=Conditioning(labels=torch.full_like(labels_t, null))
                            if null is not None else None)
    if encoder is not None:
        return encode_prompts(pipe, [""], [""]).repeat(num_images)
    if classes is not None and denoiser.null_label is None:
        raise ArgumentError("labels", "this model is class-conditional and has no null class to generate "
                            f"unconditionally: give labels 0 to {classes - 1}")
    return Conditioning(negative=Conditioning())


def guided_model(pipe: Pipeline, cond: Conditioning, prompts: list[str] | None, generator: torch.Generator,
                 schedule: Formulation | None = None, plan: SamplingPlan | None = None,
                 step: SamplerStep | None = None):
    """``model(x_t, t) -> Prediction``: the denoiser under the spec's guidance, in spec order, for
    the samples ``cond`` describes, with ``schedule`` (default: the pipeline's formulation; pass
    the one ``Formulation.for_sample`` gave for the batch). The guidance is wrapped for one run
    of ``plan``, whose step it reads from ``step``: pass the same record to ``run_sampler``."""
    schedule = schedule or pipe.schedule
    predictor = bind_predictor(pipe.component("denoiser"), schedule)
    context = GuidanceContext(schedule=schedule, components=dict(pipe.components), prompts=prompts,
                              labels=cond.labels, generator=generator, plan=plan,
                              step=step if step is not None else SamplerStep())
    for guidance in pipe.guidance:
        predictor = guidance.wrap(predictor, context)

    def model(x_t: Tensor, t: Tensor):
        t = t.reshape(-1).to(pipe.device)
        return predictor(x_t, t.expand(x_t.shape[0]) if t.numel() == 1 else t, cond)

    return model


@torch.no_grad()
def generate(
    pipe: Pipeline,
    prompt: str | list[str] | None = None,
    *,
    negative_prompt: str | list[str] | None = None,
    labels: int | list[int] | None = None,
    steps: int | None = None,
    seed: int = 0,
    seeds: list[int] | None = None,
    num_images: int = 1,
    height: int = 64,
    width: int = 64,
    latents: Tensor | None = None,
    image: Image.Image | Tensor | None = None,
    mask: Image.Image | Tensor | None = None,
    strength: float = 1.0,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> GenerationResult:
    """Generate images with the pipeline's components.

    :param prompt: one prompt or one per sample; each is repeated ``num_images`` times. With no
        prompt and no labels the run is unconditional.
    :param labels: class labels for class-conditional denoiser (instead of a prompt), or the
        targets of a ``[classifier]`` that steers an unconditional one.
    :param steps: sampling steps, 1 to the model's training timesteps (default: the scheduler's).
    :param seed: 0 to 2**64 - 1; the initial noise of every sample and any step noise come from it.
    :param seeds: one seed per sample (prompts x ``num_images``) instead of ``seed``: each sample's
        noise comes from its own generator, as a one-sample call with its seed draws it, so a sample
        does not depend on the others in the call. Each sample is then that one-sample call, whose
        lock ``lock_arguments`` gives; the call's own lock flags its noise as explicit latents.
        Guidance that draws random numbers of its own (CLIP guidance's cutouts) is given the first
        seed's generator, so its samples do depend on the call's first one.
    :param latents: initial unit-variance noise ``[B, C, h, w]`` (replaces the seeded noise).
    :param image: an init image (image-to-image, inpainting), PIL or ``[B, 3, H, W]`` in [-1, 1].
    :param mask: white (1) where new content is generated, black (0) where ``image`` is kept.
    :param strength: fraction of the trajectory to run for image-to-image (1 = from pure noise).
    :param callback: called after every step; a call of several chunks (``CHUNK_PIXELS``) calls it
        for each chunk's steps in turn.
    :raises ArgumentError: before any work, for an argument out of range or one the model cannot use.
    """
    denoiser, scheduler, schedule = pipe.component("denoiser"), pipe.component("scheduler"), pipe.schedule
    autoencoder = pipe.component("autoencoder")
    for name, value in (("[denoiser]", denoiser), ("[scheduler]", scheduler), ("[diffusion]", schedule)):
        if value is None:
            raise SpecError(f"generation needs a {name} table", source=pipe.source)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    label_list = [labels] if isinstance(labels, int) else list(labels or [])
    conditions = max(len(prompts), len(label_list), 1)
    check_arguments(num_images=num_images, height=height, width=width, steps=steps, seed=seed, conditions=conditions)
    batch = conditions * num_images
    check_model_arguments(pipe, steps=steps, height=height, width=width)
    if not 0.0 < strength <= 1.0:
        raise ArgumentError("strength", f"{strength} is out of range: it must be above 0 and at most 1")
    if seeds is not None:
        check_seeds(seeds, batch, latents)
    downscale = autoencoder.downscale if autoencoder is not None else 1
    channels = autoencoder.latent_channels if autoencoder is not None else denoiser.in_channels
    device, dtype = pipe.device, pipe.dtype
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds] if seeds is not None else None
    generator = torch.Generator("cpu").manual_seed(seed if seeds is None else seeds[0])
    cond = condition(pipe, prompts, negative_prompt, label_list, num_images).to(device, dtype)
    sample_prompts = [p for p in prompts for _ in range(num_images)]
    shape = (batch, channels, height // downscale, width // downscale)

    schedule = schedule.for_sample(shape)  # a resolution-dependent formulation (flow's dynamic shift) settles here
    plan = scheduler.plan(schedule, steps, strength).to(device)
    if generators is not None:
        noise = torch.cat([randn((1, *shape[1:]), g, device, dtype) for g in generators])
    else:
        noise = randn(shape, generator, device, dtype) if latents is None else latents.to(device, dtype)
    if tuple(noise.shape) != shape:
        raise SpecError(f"latents have shape {tuple(noise.shape)}, expected {shape}")
    pixels = known_mask = None
    if image is not None:
        pixels = image if isinstance(image, Tensor) else from_pil(image, (width, height))
        pixels = pixels.to(device, dtype)
        if pixels.shape[0] == 1 and batch > 1:
            pixels = pixels.expand(batch, -1, -1, -1)
        if mask is not None:
            m = mask if isinstance(mask, Tensor) else from_pil(mask.convert("L"))[:, :1] * 0.5 + 0.5
            if m.shape[-2:] != (height, width):
                raise SpecError(f"mask is {tuple(m.shape[-2:])} (h, w) but the image is {(height, width)}")
            known_mask = torch.nn.functional.interpolate(m.float(), size=shape[-2:], mode="nearest").to(device, dtype)

    lock = make_lock(pipe, lock_arguments(  # before sampling: it hashes the weights, which may fail
        prompt=prompt, negative_prompt=negative_prompt, labels=labels, steps=steps, seed=seed, num_images=num_images,
        height=height, width=width, strength=strength, latents=latents is not None or seeds is not None,
        image=image is not None, mask=mask is not None,
    ))
    finals, decoded_parts = [], []
    per_chunk = max(1, CHUNK_PIXELS // (height * width))
    for start in range(0, batch, per_chunk):
        part = slice(start, start + per_chunk)
        x, known, part_mask = noise[part] * plan.init_noise_sigma, None, None
        if pixels is not None:
            init = autoencoder.encode(pixels[part]) if autoencoder is not None else pixels[part]
            if strength < 1.0:
                x = scheduler.noised(init, noise[part], plan, 0)
            if known_mask is not None:
                known, part_mask = init, known_mask if known_mask.shape[0] == 1 else known_mask[part]
        part_cond = cond.select(part)
        step = SamplerStep.for_plan(plan)
        model = guided_model(pipe, part_cond, sample_prompts[part] or None, generator, schedule, plan, step)
        sampler, known_noise = scheduler, None
        if generators is not None:
            sampler, known_noise = sample_noise(scheduler, plan, generators[part], x, known)
        final = run_sampler(model, sampler, plan, x, generator=generator, known=known, known_noise=known_noise,
                            mask=part_mask, callback=callback, progress=progress, step=step)
        decoded = autoencoder.decode(final) if autoencoder is not None else final
        if not bool(torch.isfinite(decoded).all()):
            raise SamplingError("decoding produced non-finite values (check the autoencoder weights and dtype)")
        finals.append(final)
        decoded_parts.append(decoded)
    final, decoded = torch.cat(finals), torch.cat(decoded_parts)
    return GenerationResult(images=to_pil(decoded), latents=final, seed=seed, lock=lock, decoded=decoded)


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


def sample_noise(scheduler: Any, plan: Any, generators: list[torch.Generator], x: Tensor,
                 known: Tensor | None) -> tuple[Any, Tensor | None]:
    """``(scheduler, known_noise)`` for samples that each draw from their own generator, in the
    order ``run_sampler`` draws from a one-sample call's generator: the inpainting noise of the
    known region, then every step's noise. A stochastic scheduler comes back wrapped with its step
    noise preset (``PresetStepNoise``); ``known_noise`` is None without a known region."""
    one = (1, *x.shape[1:])
    known_noise = torch.cat([randn(one, g, x.device, x.dtype) for g in generators]) if known is not None else None
    if not scheduler.stochastic:
        return scheduler, known_noise
    noise = torch.cat([step_noise(len(plan), one, g, x.device, x.dtype) for g in generators], dim=1)  # (steps, B, ...)
    return PresetStepNoise(scheduler, noise), known_noise


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
