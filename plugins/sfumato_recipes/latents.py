"""What a diffusion model (or a noise-aware classifier) sees: pixels, or latents of a frozen autoencoder."""

from __future__ import annotations

import sfumato
import torch
from torch import Tensor, nn


def check_channels(model: nn.Module, autoencoder: nn.Module | None, table: str) -> None:
    """The model's ``in_channels`` must equal the latent channels (or 3 for pixels)."""
    expected = autoencoder.latent_channels if autoencoder is not None else 3
    got = getattr(model, "in_channels", getattr(getattr(model, "spec", None), "in_channels", expected))
    if got != expected:
        where = f"the [autoencoder]'s latent_channels ({expected})" if autoencoder is not None else "3 (RGB pixels)"
        raise sfumato.SpecError(f"[{table}] in_channels = {got} must equal {where}")


def to_model_space(images: Tensor, autoencoder: nn.Module | None) -> Tensor:
    """Images in [-1, 1] -> what the model is trained on (the autoencoder's scaled latents, its
    posterior mean, so a fixed image always gives the same latents)."""
    if autoencoder is None:
        return images
    with torch.no_grad():
        return autoencoder.encode(images).float()


def noised(schedule: sfumato.Formulation, x0: Tensor, ctx: sfumato.StepContext, max_timestep: int | None = None):
    """``(x_t, noise, t)`` for a batch: the timesteps the formulation trains on
    (``sample_training_timesteps``: uniform integers for VP, logit-normal for flow matching,
    log-normal sigma for EDM), or uniform integers below ``max_timestep``; per-sample noise;
    the variance-preserving ``x_t`` of ``Formulation.add_noise``."""
    if max_timestep is not None:
        t = ctx.random.randint(0, max_timestep).float()  # (B,)
    else:
        t = schedule.sample_training_timesteps(ctx.random).float()  # (B,)
    noise = ctx.random.randn_like(x0)
    return schedule.add_noise(x0, noise, t), noise, t
