"""Building blocks of the KL autoencoder: ResNet block, mid-block self-attention, resampling.

These follow the convolutional VAE of Latent Diffusion (Rombach et al. 2022,
https://arxiv.org/abs/2112.10752), itself the VQGAN autoencoder (Esser et al. 2021,
https://arxiv.org/abs/2012.09841) with a KL-regularised bottleneck. Every normalisation is a
GroupNorm with ``eps=1e-6`` and every activation is SiLU, as in the released checkpoints.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

NORM_EPS = 1e-6


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """The autoencoder's only normalisation: GroupNorm with the checkpoints' ``eps``."""
    return nn.GroupNorm(groups, channels, eps=NORM_EPS)


class ResnetBlock(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x))))))``, with a 1x1 conv on the skip path when the
    width changes (He et al. 2016, https://arxiv.org/abs/1603.05027, pre-activation form)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over all spatial positions, with a residual connection.

    The only non-local operation of the autoencoder; it sits at the lowest resolution, so its
    cost is quadratic in ``(H / downscale) * (W / downscale)``. Uses
    ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels where available).
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)
        #: ``"sdpa"``: ``F.scaled_dot_product_attention``; ``"math"``: the explicit reference.
        self.backend = "sdpa"

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        h = rearrange(self.norm(x), "b c h w -> b (h w) c")
        q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)  # (B, HW, C) each, one head
        if self.backend == "sdpa":
            h = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
        else:
            weights = (q @ k.transpose(1, 2) * q.shape[-1] ** -0.5).softmax(dim=-1)  # (B, HW, HW)
            h = weights @ v  # (B, HW, C)
        h = rearrange(self.to_out(h), "b (h w) c -> b c h w", h=height, w=width)
        return x + h


class MidBlock(nn.Module):
    """ResNet block, self-attention (optional), ResNet block: the bottleneck of both halves."""

    def __init__(self, channels: int, groups: int, attention: bool = True):
        super().__init__()
        self.resnet_1 = ResnetBlock(channels, channels, groups)
        self.attention = SelfAttention(channels, groups) if attention else nn.Identity()
        self.resnet_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.resnet_2(self.attention(self.resnet_1(x)))


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv. The input is padded by one pixel on the
    right and bottom only (asymmetric padding, as the checkpoints were trained)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H, W) -> (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour interpolation, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)
