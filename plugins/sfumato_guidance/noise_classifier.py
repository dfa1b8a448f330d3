"""``noise-classifier``: a noise-aware classifier ``(x_t, t) -> logits`` for classifier guidance.

Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis"
(https://arxiv.org/abs/2105.05233), sec. 4.1: the downsampling half of a U-Net with a timestep
embedding, trained with cross-entropy on noised samples ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps``
at uniformly drawn t, so its gradient ``grad_x log p(y | x_t)`` is meaningful at every noise
level. Here the pooling head is a global average (the paper uses attention pooling) and the
network is small enough for pixels of tiny images or for latents.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

import sfumato

#: GroupNorm epsilon of every norm (PyTorch's default, which the shipped weights were trained with).
NORM_EPS = 1e-5


class ResidualBlock(sfumato.nn.ResnetBlock):
    """``sfumato.nn.ResnetBlock`` with the timestep embedding (as in DDPM's U-Net), under the key
    names this classifier's checkpoints use: ``embed`` for the embedding projection, ``skip`` for
    the 1x1 shortcut."""

    embedding_name = "embed"
    shortcut_name = "skip"


class NoiseClassifier(sfumato.Classifier):
    """``x_t [B, C, H, W], t [B] -> logits [B, num_classes]``; every level but the last halves
    the resolution with a stride-2 convolution."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["noise-classifier"] = "noise-classifier"
        weights: sfumato.SpecPath | None = Field(None, description="safetensors weights (sfumato.save_component); None: random.")
        in_channels: int = Field(3, ge=1, description="Channels of x_t: 3 for RGB pixels, the latent channels for latents.")
        num_classes: int = Field(10, ge=2, description="Number of classes (logits).")
        channels: list[int] = Field(
            [32, 64, 64], min_length=1, description="Width of each resolution level, full resolution first.",
        )
        blocks_per_level: int = Field(1, ge=1, description="Residual blocks per level.")
        norm_groups: int = Field(8, ge=1, description="GroupNorm groups; must divide every level's width.")

        @model_validator(mode="after")
        def _groups_divide_channels(self):
            bad = [c for c in self.channels if c % self.norm_groups]
            if bad:
                raise ValueError(f"norm_groups {self.norm_groups} must divide every width in channels, not {bad}")
            return self

    def __init__(self, spec: Spec):
        super().__init__()
        self.num_classes = spec.num_classes
        self.in_channels = spec.in_channels
        width = spec.channels[0]
        self.time_dim = width
        embed_dim = 4 * width
        self.time_mlp = nn.Sequential(nn.Linear(width, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.conv_in = nn.Conv2d(spec.in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for level, out_width in enumerate(spec.channels):
            level_blocks = nn.ModuleList()
            for _ in range(spec.blocks_per_level):
                level_blocks.append(ResidualBlock(width, out_width, groups=spec.norm_groups, eps=NORM_EPS,
                                                  embed_dim=embed_dim))
                width = out_width
            self.blocks.append(level_blocks)
            last = level == len(spec.channels) - 1
            self.downsamples.append(nn.Identity() if last else nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.norm_out = nn.GroupNorm(spec.norm_groups, width, eps=NORM_EPS)
        self.head = nn.Linear(width, spec.num_classes)
        if spec.weights:
            sfumato.load_into(self, sfumato.load_weights(spec.weights), source=spec.weights)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = t.reshape(-1).expand(x.shape[0])  # () or (B,) -> (B,)
        embedding = self.time_mlp(sfumato.nn.timestep_embedding(t, self.time_dim).to(x.dtype))  # (B, 4 * C0)
        h = self.conv_in(x)
        for level_blocks, downsample in zip(self.blocks, self.downsamples):
            for block in level_blocks:
                h = block(h, embedding)
            h = downsample(h)
        h = F.silu(self.norm_out(h)).mean(dim=(2, 3))  # (B, C): global average pooling
        return self.head(h)
