"""``identity``: the autoencoder of pixel-space diffusion models (DDPM, guided diffusion).

The "latents" are the images themselves, optionally multiplied by a fixed factor, so a pixel
model plugs into the same pipeline as a latent one.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import sfumato


class IdentityAutoencoder(sfumato.Autoencoder):
    """``encode(x) = x * scaling_factor``, ``decode(z) = z / scaling_factor``; no weights.

    ``latent_channels`` is the image channel count and ``downscale`` is 1.
    """

    class Spec(sfumato.ComponentSpec):
        type: Literal["identity"] = "identity"
        channels: int = Field(3, gt=0, description="Image channels (and so latent channels).")
        scaling_factor: float = Field(1.0, gt=0, description="encode multiplies by this, decode divides.")

    def __init__(self, spec: Spec):
        super().__init__()
        self.spec = spec
        self.latent_channels = spec.channels
        self.downscale = 1

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images in [-1, 1] times ``scaling_factor`` (``generator`` is unused: nothing is sampled)."""
        return images * self.spec.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """Latents divided by ``scaling_factor`` (not clamped)."""
        return latents / self.spec.scaling_factor
