"""Building blocks of the KL autoencoder: its ResNet block and the mid block's self-attention.

These follow the convolutional VAE of Latent Diffusion (Rombach et al. 2022,
https://arxiv.org/abs/2112.10752), itself the VQGAN autoencoder (Esser et al. 2021,
https://arxiv.org/abs/2012.09841) with a KL-regularised bottleneck. Every normalisation is a
GroupNorm with ``eps=1e-6`` and every activation is SiLU, as in the released checkpoints. The
ResNet block and the resamplers are the shared ``sfumato.nn`` ones (the U-Net uses them too).
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

import sfumato

NORM_EPS = 1e-6


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """The autoencoder's only normalisation: GroupNorm with the checkpoints' ``eps``."""
    return nn.GroupNorm(groups, channels, eps=NORM_EPS)


class ResnetBlock(sfumato.nn.ResnetBlock):
    """``sfumato.nn.ResnetBlock`` as this autoencoder's checkpoints name it: the 1x1 skip
    convolution is ``shortcut`` (``formats.py`` maps it to diffusers' ``conv_shortcut`` and LDM's
    ``nin_shortcut``). Built without a time embedding, with ``eps=NORM_EPS``."""

    shortcut_name = "shortcut"


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
        self.resnet_1 = ResnetBlock(channels, channels, groups=groups, eps=NORM_EPS)
        self.attention = SelfAttention(channels, groups) if attention else nn.Identity()
        self.resnet_2 = ResnetBlock(channels, channels, groups=groups, eps=NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return self.resnet_2(self.attention(self.resnet_1(x)))
