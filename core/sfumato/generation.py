"""The generation flow: prompt -> conditioning -> guided predictor -> scheduler steps -> images.

Every generation task (text-to-image, image-to-image, inpainting, class-conditional and
unconditional) is this one function with different inputs.
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
from .interfaces import GuidanceContext, bind_predictor
from .outputs import make_lock
from .sampling import StepCallback, randn, run_sampler

if TYPE_CHECKING:
    from .pipeline import Pipeline


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


@torch.no_grad()
def generate(
    pipe: Pipeline,
    prompt: str | list[str] | None = None,
    *,
    negative_prompt: str | list[str] | None = None,
    labels: int | list[int] | None = None,
    steps: int | None = None,
    seed: int = 0,
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

    :param prompt: one prompt or one per sample; each is repeated ``num_images`` times.
    :param labels: class labels for class-conditional denoisers (instead of a prompt).
    :param latents: initial unit-variance noise ``[B, C, h, w]`` (replaces the seeded noise).
    :param image: an init image (image-to-image, inpainting), PIL or ``[B, 3, H, W]`` in [-1, 1].
    :param mask: white (1) where new content is generated, black (0) where ``image`` is kept.
    :param strength: fraction of the trajectory to run for image-to-image (1 = from pure noise).
    """
    denoiser, scheduler, schedule = pipe.component("denoiser"), pipe.component("scheduler"), pipe.schedule
    autoencoder = pipe.component("autoencoder")
    for name, value in (("[denoiser]", denoiser), ("[scheduler]", scheduler), ("[diffusion]", schedule)):
        if value is None:
            raise SpecError(f"generation needs a {name} table", source=pipe.source)
    device, dtype = pipe.device, pipe.dtype
    generator = torch.Generator("cpu").manual_seed(seed)

    prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    label_list = [labels] if isinstance(labels, int) else list(labels or [])
    base = max(len(prompts), len(label_list), 1)
    batch = base * num_images
    cond = Conditioning()
    if prompts:
        if pipe.component("text_encoder") is None:
            raise SpecError("a prompt needs a [text_encoder] table", source=pipe.source)
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) or negative_prompt is None \
            else list(negative_prompt)
        negatives = ["" if n is None else n for n in negatives]
        cond = encode_prompts(pipe, prompts, negatives).repeat(num_images).to(device, dtype)
    elif label_list:
        check_labels(label_list, getattr(denoiser, "num_classes", None))
        null = denoiser.null_label
        labels_t = torch.tensor(label_list, device=device).repeat_interleave(num_images)
        negative = Conditioning(labels=torch.full_like(labels_t, null)) if null is not None else None
        cond = Conditioning(labels=labels_t, negative=negative)

    downscale = autoencoder.downscale if autoencoder is not None else 1
    channels = autoencoder.latent_channels if autoencoder is not None else denoiser.in_channels
    if height % downscale or width % downscale:
        raise SpecError(f"height and width must be multiples of {downscale} (got {height}x{width})")
    shape = (batch, channels, height // downscale, width // downscale)

    plan = scheduler.plan(schedule, steps, strength).to(device)
    noise = randn(shape, generator, device, dtype) if latents is None else latents.to(device, dtype)
    if tuple(noise.shape) != shape:
        raise SpecError(f"latents have shape {tuple(noise.shape)}, expected {shape}")

    known = known_mask = None
    if image is not None:
        pixels = image if isinstance(image, Tensor) else from_pil(image, (width, height))
        pixels = pixels.to(device, dtype)
        if pixels.shape[0] == 1 and batch > 1:
            pixels = pixels.expand(batch, -1, -1, -1)
        init = autoencoder.encode(pixels) if autoencoder is not None else pixels
        if mask is not None:
            m = mask if isinstance(mask, Tensor) else from_pil(mask.convert("L"))[:, :1] * 0.5 + 0.5
            if m.shape[-2:] != (height, width):
                raise SpecError(f"mask is {tuple(m.shape[-2:])} (h, w) but the image is {(height, width)}")
            known_mask = torch.nn.functional.interpolate(m.float(), size=shape[-2:], mode="nearest").to(device, dtype)
            known = init
        x = scheduler.noised(init, noise, plan, 0) if strength < 1.0 else noise * plan.init_noise_sigma
    else:
        x = noise * plan.init_noise_sigma

    predictor = bind_predictor(denoiser, schedule)
    context = GuidanceContext(
        schedule=schedule, components=dict(pipe.components), prompts=[p for p in prompts for _ in range(num_images)] or None,
        labels=cond.labels, generator=generator,
    )
    for guidance in pipe.guidance:
        predictor = guidance.wrap(predictor, context)

    def model(x_t: Tensor, t: Tensor):
        t = t.reshape(-1).to(device)
        return predictor(x_t, t.expand(x_t.shape[0]) if t.numel() == 1 else t, cond)

    final = run_sampler(
        model, scheduler, plan, x, generator=generator, known=known, mask=known_mask,
        callback=callback, progress=progress,
    )
    decoded = autoencoder.decode(final) if autoencoder is not None else final
    if not bool(torch.isfinite(decoded).all()):
        raise SamplingError("decoding produced non-finite values (check the autoencoder weights and dtype)")
    arguments = {
        "prompt": prompt, "negative_prompt": negative_prompt, "labels": labels, "steps": steps,
        "seed": seed, "num_images": num_images, "height": height, "width": width, "strength": strength,
        "latents": latents is not None, "image": image is not None, "mask": mask is not None,
    }
    return GenerationResult(images=to_pil(decoded), latents=final, seed=seed, lock=make_lock(pipe, arguments),
                            decoded=decoded)
