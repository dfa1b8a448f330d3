"""``sfumato.nn``: the network building blocks that several model plugins share.

Plugins may not import each other, so a layer that two of them need lives here, in the public API
(``sfumato.nn.ResnetBlock``), rather than in a copy per plugin. Each block computes what its
diffusers counterpart computes, with the same parameter names, so diffusers checkpoints load
unchanged and parity tests compare like with like:

- ``timestep_embedding``: diffusers' ``get_timestep_embedding``;
- ``TimestepEmbedding``: diffusers' ``TimestepEmbedding``, the MLP on that sinusoid;
- ``ResnetBlock``: diffusers' ``ResnetBlock2D`` with its default options, with or without a time
  embedding (U-Nets and noise-aware classifiers; autoencoders);
- ``Downsample`` / ``Upsample``: diffusers' ``Downsample2D`` / ``Upsample2D`` with a 3x3 convolution.

Only what two or more networks use belongs here; a block that one network needs stays in its plugin.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Downsample", "ResnetBlock", "TimestepEmbedding", "Upsample", "timestep_embedding"]


def timestep_embedding(
    timesteps: Tensor,
    dim: int,
    flip_sin_to_cos: bool = True,
    downscale_freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in the Transformer and DDPM
    (https://arxiv.org/abs/1706.03762, https://arxiv.org/abs/2006.11239).

    Frequencies are ``max_period ** (-i / (dim / 2 - downscale_freq_shift))`` for
    ``i < dim // 2``; the sines come first unless ``flip_sin_to_cos``; an odd ``dim`` gets a zero
    last column. Both options exist because checkpoints were trained with different choices, and
    they must match the weights. The defaults are Stable Diffusion's (cosines first, shift 0);
    diffusers' function defaults to ``flip_sin_to_cos=False, downscale_freq_shift=1``. Computed
    in float32 whatever the dtype of ``timesteps``.

    :param timesteps: ``[B]`` timesteps. :returns: ``[B, dim]`` float32.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    frequencies = torch.exp(exponent / (half - downscale_freq_shift))  # (half,)
    angles = timesteps.float()[:, None] * frequencies[None, :]  # (B, half)
    sin, cos = torch.sin(angles), torch.cos(angles)
    embedding = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)  # (B, 2 * half)
    return F.pad(embedding, (0, dim % 2))  # (B, dim)


class TimestepEmbedding(nn.Module):
    """The MLP that turns a sinusoidal timestep embedding into the vector a network is
    conditioned on: ``linear_2(silu(linear_1(x)))``, ``[B, in_dim] -> [B, embed_dim]``."""

    def __init__(self, in_dim: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class ResnetBlock(nn.Module):
    """A pre-activation residual block (He et al. 2016, https://arxiv.org/abs/1603.05027), with
    the per-channel embedding bias of DDPM's U-Net (https://arxiv.org/abs/2006.11239)::

        h   = conv1(silu(norm1(x))) + time_emb_proj(silu(embedding))[:, :, None, None]
        out = conv_shortcut(x) + conv2(dropout(silu(norm2(h))))

    ``conv_shortcut`` is a 1x1 convolution when the width changes and the identity otherwise;
    with ``embed_dim=None`` there is no ``time_emb_proj`` and no embedding input (an autoencoder's
    block). This is diffusers' ``ResnetBlock2D`` with ``time_embedding_norm="default"`` and
    ``output_scale_factor=1``, parameters in the same order, so a seeded initialisation matches.

    The state-dict names of the two optional layers are the class attributes ``shortcut_name``
    and ``embedding_name``: a network whose checkpoints name them otherwise keeps its format with
    a subclass that sets them (``class Block(ResnetBlock): shortcut_name = "skip"``).

    :param in_channels: input channels. :param out_channels: output channels.
    :param groups: GroupNorm groups; must divide both widths.
    :param eps: GroupNorm epsilon (diffusers' U-Nets use 1e-5, its autoencoders 1e-6); it must
        be the one the weights were trained with.
    :param dropout: dropout probability before ``conv2`` (active in training only).
    :param embed_dim: width of the embedding ``forward`` receives; None: the block takes none.
    """

    shortcut_name: ClassVar[str] = "conv_shortcut"
    embedding_name: ClassVar[str] = "time_emb_proj"

    def __init__(self, in_channels: int, out_channels: int, *, groups: int, eps: float, dropout: float = 0.0,
                 embed_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        setattr(self, self.embedding_name, nn.Linear(embed_dim, out_channels) if embed_dim is not None else None)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        setattr(self, self.shortcut_name, shortcut)

    def forward(self, x: Tensor, embedding: Tensor | None = None) -> Tensor:
        """:param x: ``[B, in_channels, H, W]``. :param embedding: ``[B, embed_dim]``, required
        when the block was built with an ``embed_dim``. :returns: ``[B, out_channels, H, W]``."""
        h = self.conv1(F.silu(self.norm1(x)))
        projection = getattr(self, self.embedding_name)
        if projection is not None:
            h = h + projection(F.silu(embedding))[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        shortcut = getattr(self, self.shortcut_name)
        return (x if shortcut is None else shortcut(x)) + h


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution (``[B, C, H, W] -> [B, C, H/2, W/2]``).

    :param padding: 1 pads every side (diffusers' U-Nets); 0 pads one pixel on the right and
        bottom only, the convention of the original LDM U-Net and of every KL autoencoder.
    """

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution by nearest-neighbour interpolation, then smooth with a 3x3 convolution.

    ``size`` replaces the factor of 2, so a U-Net whose input had an odd size on the way down
    comes back to it exactly.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, 2H, 2W)
        else:
            x = F.interpolate(x, size=tuple(size), mode="nearest")
        return self.conv(x)
