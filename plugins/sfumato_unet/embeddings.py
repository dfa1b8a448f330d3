"""Timestep and class embeddings: how the U-Net learns what noise level (and class) it sees."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def timestep_embedding(
    t: Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0, max_period: float = 10000.0
) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in the Transformer and DDPM
    (https://arxiv.org/abs/1706.03762, https://arxiv.org/abs/2006.11239).

    Frequencies are ``max_period ** (-i / (dim / 2 - freq_shift))``; ``flip_sin_to_cos`` puts the
    cosines first. Both options exist because checkpoints were trained with different choices
    (Stable Diffusion: cos first, shift 0), and they must match the weights. Computed in float32.

    :param t: ``[B]`` timesteps. :returns: ``[B, dim]``.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    frequencies = torch.exp(exponent / (half - freq_shift))  # (half,)
    angles = t.float()[:, None] * frequencies[None, :]  # (B, half)
    sin, cos = torch.sin(angles), torch.cos(angles)
    embedding = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)  # (B, 2 * half)
    return nn.functional.pad(embedding, (0, dim % 2))  # (B, dim)


class TimestepEmbedding(nn.Module):
    """The MLP that turns the sinusoidal embedding into the vector every residual block receives."""

    def __init__(self, in_dim: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))
