"""The generation flow as blocks: each step of ``sfumato.generate`` as a public function.

A generation task is these blocks in order (``docs/architecture.md``, "The sampling flow")::

    cond          = condition(pipe, prompts, negative_prompt, labels, num_images)  # or encode_prompts
    height, width = native_size(pipe)                    # the model's own size, unless the call gives one
    shape         = latent_shape(pipe, batch, height, width)
    schedule, plan = sampling_plan(pipe, shape, steps, strength)
    x             = initial_latents(noise, plan)         # noise: initial_noise(shape, seed, ...)
                    or scheduler.noised(encode_image(pipe, image, ...), noise, plan, 0)   # image-to-image
    step          = SamplerStep.for_plan(plan)
    model         = guided_model(pipe, cond, prompts, generator, schedule, plan, step)
    latents       = sample(pipe, model, plan, x, generator=generator, step=step)
    images        = decode(pipe, latents)                # [B, 3, H, W] in [-1, 1]; to_pil for PIL images

``sfumato.generate`` adds what every call needs around them (argument checks before any work, the
lock, per-sample seeds, chunking of large calls); a task with a different flow composes the blocks
itself (``tests/tasks/test_blocks.py`` writes a task in a few lines), and the diffusion training
recipe draws its sample grids with the same ``guided_model`` and ``sample``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from . import conditioners
from .conditioning import Conditioning
from .errors import SamplingError, SpecError
from .formulation import Formulation
from .interfaces import GuidanceContext, SamplerStep, SamplingPlan, bind_predictor
from .sampling import StepCallback, randn, run_sampler

if TYPE_CHECKING:
    from .pipeline import Pipeline

#: The size a model that declares none generates at (pixels; the built-in models' training size).
FALLBACK_SIZE = 64


class ArgumentError(SpecError):
    """An argument of ``generate`` is wrong. ``argument`` is its Python name (``num_images``) so a
    caller with other names for it (the CLI's ``--num-images``) can name its own; ``problem``
    says what is wrong and what would be right."""

    def __init__(self, argument: str, problem: str):
        self.argument, self.problem = argument, problem
        super().__init__(f"{argument}: {problem}")


@dataclass
class Parts:
    """What the blocks read of a ``Pipeline`` (``component(table)``, ``components``, ``schedule``,
    ``guidance``, ``device``, ``dtype``), for code that holds components but no pipeline: a
    training recipe drawing its sample grids with the denoiser it trains."""

    components: dict[str, Any]
    schedule: Formulation
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    guidance: list[Any] = field(default_factory=list)

    def component(self, table: str) -> Any:
        return self.components.get(table)


# -- conditioning -----------------------------------------------------------------------------


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


# -- shapes and noise -------------------------------------------------------------------------


def native_size(pipe: Pipeline) -> tuple[int, int]:
    """``(height, width)`` in pixels a call gets when it gives none: the task's ``height`` and
    ``width`` when its spec sets them, else the denoiser's training size (its ``sample_size``
    times the autoencoder's downscale: 512 for SD 1.5's U-Net of sample_size 64), else 64."""
    task_spec = getattr(pipe.component("task"), "spec", None)
    height, width = getattr(task_spec, "height", None), getattr(task_spec, "width", None)
    if height is not None and width is not None:
        return height, width
    sample_size = getattr(getattr(pipe.component("denoiser"), "spec", None), "sample_size", None)
    autoencoder = pipe.component("autoencoder")
    size = sample_size * (autoencoder.downscale if autoencoder is not None else 1) if sample_size else FALLBACK_SIZE
    return height or size, width or size


def latent_shape(pipe: Pipeline, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
    """``(batch, channels, h, w)`` of the latents the sampler works on for images of ``height`` x
    ``width``: the autoencoder's latent channels and downscale, or the denoiser's own for a pixel model."""
    autoencoder, denoiser = pipe.component("autoencoder"), pipe.component("denoiser")
    if autoencoder is None:
        return batch, denoiser.in_channels, height, width
    return batch, autoencoder.latent_channels, height // autoencoder.downscale, width // autoencoder.downscale


def initial_noise(shape: tuple[int, ...], pipe: Pipeline, generator: torch.Generator | None = None,
                  generators: list[torch.Generator] | None = None) -> Tensor:
    """Unit-variance noise of ``shape`` drawn on the CPU (the same seed gives the same noise on
    every device): from ``generator``, or one sample per generator of ``generators``, each drawn as
    a one-sample call with its seed draws it."""
    if generators is not None:
        return torch.cat([randn((1, *shape[1:]), g, pipe.device, pipe.dtype) for g in generators])
    return randn(shape, generator, pipe.device, pipe.dtype)


def sampling_plan(pipe: Pipeline, shape: tuple[int, ...], steps: int | None = None,
                  strength: float = 1.0) -> tuple[Formulation, SamplingPlan]:
    """``(schedule, plan)``: the formulation settled for samples of ``shape`` (flow's
    resolution-dependent shift) and the scheduler's plan of ``steps`` (default: the spec's), the
    last ``strength`` of the trajectory, on the pipeline's device."""
    schedule = pipe.schedule.for_sample(shape)
    return schedule, pipe.component("scheduler").plan(schedule, steps, strength).to(pipe.device)


def initial_latents(noise: Tensor, plan: SamplingPlan) -> Tensor:
    """A full-strength run's start: the unit-variance ``noise`` at the plan's first noise level."""
    return noise * plan.init_noise_sigma


# -- images in --------------------------------------------------------------------------------


def encode_image(pipe: Pipeline, pixels: Tensor) -> Tensor:
    """``[B, 3, H, W]`` in [-1, 1] to the sampler's clean latents (the autoencoder's scaled
    latents; the pixels themselves for a pixel model)."""
    autoencoder = pipe.component("autoencoder")
    pixels = pixels.to(pipe.device, pipe.dtype)
    return autoencoder.encode(pixels) if autoencoder is not None else pixels


def mask_tensor(mask: Image.Image | Tensor, height: int, width: int) -> Tensor:
    """A mask as ``[B, 1, height, width]`` in [0, 1], 1 where new content is made: a PIL image
    (white = 1) or a tensor already in that range.

    :raises ArgumentError: (``mask``) when its size is not the image's.
    """
    if isinstance(mask, Image.Image):
        import numpy as np

        m = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]
    else:
        m = mask.float()
        m = m[None, None] if m.ndim == 2 else m[:, None] if m.ndim == 3 else m
    if tuple(m.shape[-2:]) != (height, width):
        raise ArgumentError("mask", f"the mask is {m.shape[-1]}x{m.shape[-2]} (width x height) but the image is "
                            f"{width}x{height}: give a mask of the image's size")
    return m


def latent_mask(mask: Tensor, shape: tuple[int, ...], pipe: Pipeline) -> Tensor:
    """A pixel mask ``[B, 1, H, W]`` at the latents' resolution ``shape[-2:]`` (nearest, as
    RePaint-style blending keeps whole latent pixels), on the pipeline's device."""
    return F.interpolate(mask.float(), size=tuple(shape[-2:]), mode="nearest").to(pipe.device, pipe.dtype)


def inpainting_inputs(pipe: Pipeline, pixels: Tensor, mask: Tensor, shape: tuple[int, ...]) -> Tensor | None:
    """The extra input channels of an inpainting denoiser (SD's 9-channel U-Net: ``in_channels``
    = 2 x latent channels + 1), ``[B, 1 + C, h, w]``: the mask resized to the latents (bilinear,
    as diffusers' ``StableDiffusionInpaintPipeline.prepare_mask_latents`` does) then the latents of
    the image with the generated region blacked out; None for a denoiser without them."""
    channels = shape[1]
    if pipe.component("denoiser").in_channels != 2 * channels + 1:
        return None
    mask = mask.to(pipe.device, pipe.dtype)
    masked = pixels.to(pipe.device, pipe.dtype) * (mask < 0.5)  # diffusers: image * (mask < 0.5)
    small = F.interpolate(mask, size=tuple(shape[-2:]))  # diffusers' default (nearest) resize
    return torch.cat([small, encode_image(pipe, masked)], dim=1)


# -- the denoiser, guided ---------------------------------------------------------------------


def with_extra_channels(denoiser: Callable[..., Tensor], extra: Tensor) -> Callable[..., Tensor]:
    """``denoiser`` with ``extra`` ``[B, E, h, w]`` concatenated after its input's channels (an
    inpainting U-Net's mask and masked-image latents). Guidance that batches several predictions
    of the same samples (``cfg``'s cond/uncond rows, PAG's perturbed rows) stacks whole copies
    of the batch, so the rows repeat ``extra`` as often."""

    def forward(x: Tensor, t: Tensor, cond: Conditioning | None = None) -> Tensor:
        rows = extra if x.shape[0] == extra.shape[0] else extra.repeat(x.shape[0] // extra.shape[0], 1, 1, 1)
        return denoiser(torch.cat([x, rows.to(x.dtype)], dim=1), t, cond)

    return forward


def prompt_conditioner(pipe: Pipeline, height: int | None = None, width: int | None = None,
                       inputs: dict[str, Any] | None = None) -> Callable[[list[str]], Conditioning]:
    """``encode(prompts) -> Conditioning``: the full conditioning of ``prompts``, one row each and
    without a negative, as ``sfumato.generate`` builds a call's: ``encode_prompts``, then every
    component's ``extra_conditioning`` (``sfumato.conditioners``) with a request of ``height`` x
    ``width`` (default: ``native_size``) and the call ``inputs``, on the pipeline's device and
    dtype. ``GuidanceContext.encode`` calls it (guidance asking for another prompt's prediction)."""

    def encode(prompts: list[str]) -> Conditioning:
        if pipe.component("text_encoder") is None:
            raise SpecError("guidance asked for the conditioning of a prompt, but the pipeline has no [text_encoder]")
        blank = [""] * len(prompts)
        cond = encode_prompts(pipe, list(prompts), blank).to(pipe.device, pipe.dtype)
        size = (height, width) if height and width else native_size(pipe)
        request = conditioners.ConditioningRequest(pipe, list(prompts), list(blank), *size, dict(inputs or {}))
        return replace(conditioners.extra_conditioning(cond, request), negative=None)

    return encode


def guided_model(pipe: Pipeline, cond: Conditioning | None, prompts: list[str] | None, generator: torch.Generator | None,
                 schedule: Formulation | None = None, plan: SamplingPlan | None = None,
                 step: SamplerStep | None = None, extra_channels: Tensor | None = None,
                 request: conditioners.ConditioningRequest | None = None):
    """``model(x_t, t) -> Prediction``: the denoiser under the spec's speedups, then its guidance
    (each in spec order), for the samples ``cond`` describes (None: unconditioned), with
    ``schedule`` (default: the pipeline's formulation; pass the one ``sampling_plan`` gave for the
    batch). The speedups and the guidance are wrapped for one run of ``plan``, whose step they read
    from ``step``: pass the same record to ``sample``. ``extra_channels``
    (``inpainting_inputs``) are concatenated to the denoiser's input. ``request`` is the call's
    ``ConditioningRequest`` (the one ``cond``'s extras were made with): ``GuidanceContext.encode``
    builds other prompts' conditioning with its size and inputs (default: the native size, no inputs)."""
    schedule = schedule or pipe.schedule
    cond = cond if cond is not None else Conditioning()
    denoiser = pipe.component("denoiser")
    if extra_channels is not None:
        denoiser = with_extra_channels(denoiser, extra_channels)
    conditioner = prompt_conditioner(pipe, request.height, request.width, request.inputs) if request is not None \
        else prompt_conditioner(pipe)
    context = GuidanceContext(schedule=schedule, components=dict(pipe.components), prompts=prompts,
                              labels=cond.labels, generator=generator, plan=plan,
                              step=step if step is not None else SamplerStep(), conditioner=conditioner)
    predictor = bind_predictor(conditioners.wrap_denoiser(pipe, denoiser, context), schedule)
    for speedup in pipe.component("speedups") or ():  # innermost: each sees every forward of the run
        predictor = speedup.wrap(predictor, context)
    for guidance in pipe.guidance:
        predictor = guidance.wrap(predictor, context)

    def model(x_t: Tensor, t: Tensor):
        t = t.reshape(-1).to(pipe.device)
        return predictor(x_t, t.expand(x_t.shape[0]) if t.numel() == 1 else t, cond)

    return model


# -- sampling and images out ------------------------------------------------------------------


def sample(pipe: Pipeline, model: Any, plan: SamplingPlan, x: Tensor, *, generator: torch.Generator | None = None,
           step: SamplerStep | None = None, scheduler: Any = None, known: Tensor | None = None,
           known_noise: Tensor | None = None, mask: Tensor | None = None, callback: StepCallback | None = None,
           progress: bool = True) -> Tensor:
    """Run the pipeline's scheduler (or ``scheduler``) over ``plan`` from ``x`` with ``model``:
    ``sfumato.run_sampler`` with the pipeline's parts. ``known`` latents are kept where ``mask``
    is 0 (inpainting with any model)."""
    return run_sampler(model, scheduler or pipe.component("scheduler"), plan, x, generator=generator, known=known,
                       known_noise=known_noise, mask=mask, callback=callback, progress=progress, step=step)


def decode(pipe: Pipeline, latents: Tensor) -> Tensor:
    """Latents to images ``[B, 3, H, W]`` in [-1, 1] (unclamped) through the autoencoder.

    :raises SamplingError: when the decoded images are not finite.
    """
    autoencoder = pipe.component("autoencoder")
    decoded = autoencoder.decode(latents) if autoencoder is not None else latents
    if not bool(torch.isfinite(decoded).all()):
        raise SamplingError("decoding produced non-finite values (check the autoencoder weights and dtype)")
    return decoded


def paste_known(decoded: Tensor, pixels: Tensor, mask: Tensor, blur: int = 0) -> Tensor:
    """Inpainting's kept region, back at the original pixels: ``mask * decoded + (1 - mask) *
    pixels``, the mask first softened by a Gaussian blur of radius ``blur`` pixels (A1111's
    "mask blur", so the seam fades over a few pixels). Without it the kept region is whatever the
    autoencoder's round trip made of it (tens of levels off on a small autoencoder)."""
    mask = mask.to(decoded.device, decoded.dtype)
    if blur > 0:
        mask = gaussian_blur(mask, blur)
    return mask * decoded + (1 - mask) * pixels.to(decoded.device, decoded.dtype)


def gaussian_blur(mask: Tensor, radius: int) -> Tensor:
    """``mask`` ``[B, 1, H, W]`` blurred with a Gaussian of sigma ``radius / 2`` over ``2 radius + 1`` pixels
    (separable, edges replicated)."""
    sigma = radius / 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(mask.device, mask.dtype)
    padded = F.pad(mask, (radius, radius, radius, radius), mode="replicate")
    padded = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(padded, kernel.view(1, 1, -1, 1))


__all__ = [
    "ArgumentError", "FALLBACK_SIZE", "Parts", "encode_prompts", "check_labels", "condition", "native_size", "latent_shape",
    "initial_noise", "sampling_plan", "initial_latents", "encode_image", "mask_tensor", "latent_mask",
    "inpainting_inputs", "with_extra_channels", "prompt_conditioner", "guided_model", "sample", "decode", "paste_known", "gaussian_blur",
]
