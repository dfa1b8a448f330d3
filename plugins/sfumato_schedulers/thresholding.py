"""Clipping and dynamic thresholding of the predicted x0, for DDPM and DDIM on pixel-space models.

A pixel model's data lie in [-1, 1], but early in sampling its x0 prediction can overshoot;
pulling it back before the update keeps colours from saturating, most of all under strong
guidance. Latent models must not clip (their latents are not bounded), hence the default "none".
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from pydantic import BaseModel, Field
from torch import Tensor


class ThresholdingOptions(BaseModel):
    """Spec fields of the samplers that can clip x0 (mixed into their ``Spec``)."""

    thresholding: Literal["none", "clip", "dynamic"] = Field(
        "none",
        description="What happens to the predicted x0 before each update: none; clip to "
        "[-clip_sample_range, clip_sample_range] (diffusers' clip_sample, its default for "
        "DDPM/DDIM); or dynamic thresholding (Saharia et al. 2022, Imagen, "
        "https://arxiv.org/abs/2205.11487).",
    )
    clip_sample_range: float = Field(1.0, gt=0, description="Bound for thresholding = 'clip'.")
    dynamic_thresholding_ratio: float = Field(
        0.995, gt=0, lt=1, description="Percentile of |x0| per sample used as the dynamic bound s."
    )
    sample_max_value: float = Field(1.0, ge=1, description="Largest dynamic bound s (s is clamped to [1, this]).")


def threshold_x0(x0: Tensor, options: ThresholdingOptions) -> Tensor:
    """Apply ``options.thresholding`` to ``x0`` ``[B, ...]``.

    Dynamic thresholding takes s, the ``dynamic_thresholding_ratio`` percentile of ``|x0|`` over
    each sample, clamps it to ``[1, sample_max_value]``, then clamps x0 to ``[-s, s]`` and divides
    by s; with s = 1 it is plain clipping to [-1, 1].
    """
    if options.thresholding == "none":
        return x0
    if options.thresholding == "clip":
        return x0.clamp(-options.clip_sample_range, options.clip_sample_range)
    flat = rearrange(x0.float(), "b ... -> b (...)")
    s = torch.quantile(flat.abs(), options.dynamic_thresholding_ratio, dim=1, keepdim=True)  # (B, 1)
    s = s.clamp(min=1.0, max=options.sample_max_value)
    flat = torch.maximum(torch.minimum(flat, s), -s) / s
    return flat.reshape(x0.shape).to(x0.dtype)
