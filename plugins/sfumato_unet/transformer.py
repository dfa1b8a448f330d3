"""The Stable Diffusion transformer block: self-attention, cross-attention to text tokens, and a
GEGLU feed-forward, applied to a feature map (Rombach et al., https://arxiv.org/abs/2112.10752).

Each transformer block is a ``block`` perturbation point (``sfumato.PatchPoint``), named by its
module path (``down_blocks.1.attentions.0.transformer_blocks.0``): a model patch may replace the
whole block for some rows of a forward (skip-layer guidance skips it)."""

from __future__ import annotations

from functools import partial

from einops import rearrange
from torch import Tensor, nn

import sfumato

from .attention import Attention


class GEGLU(nn.Module):
    """A gated linear unit with a GELU gate (Shazeer, https://arxiv.org/abs/2002.05202)."""

    def __init__(self, dim: int, inner_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner_dim * 2)

    def forward(self, x: Tensor) -> Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)  # (B, N, 2 * inner) -> 2 x (B, N, inner)
        return hidden * nn.functional.gelu(gate)


class FeedForward(nn.Module):
    """``dim -> GEGLU(4 * dim) -> dim``; ``net`` is a list so checkpoint keys read ``ff.net.0/2``."""

    def __init__(self, dim: int, dropout: float = 0.0, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(sfumato.PatchPoint, nn.Module):
    """Pre-norm self-attention, cross-attention and feed-forward, each with a residual; a ``block``
    perturbation point."""

    point_kind = sfumato.model_patches.BLOCK

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim, dropout=dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout)

    def forward(self, x: Tensor, context: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """:param x: ``[B, N, dim]`` tokens of a ``size`` (height, width) feature map.
        :param context: ``[B, L, context_dim]``. :returns: ``[B, N, dim]``."""
        return self.run_block(self._block, x, context, size)

    def _block(self, x: Tensor, context: Tensor, size: tuple[int, int] | None) -> Tensor:
        x = x + self.attn1(self.norm1(x), size=size)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Project a feature map to tokens, run transformer blocks that cross-attend to ``context``,
    project back and add the input.

    :param linear_projection: project with ``nn.Linear`` on tokens (SD 2.x) rather than a 1x1
        convolution on the map (SD 1.x); the two differ only in their weight shapes.
    """

    def __init__(
        self, channels: int, heads: int, head_dim: int, context_dim: int, groups: int,
        layers: int = 1, dropout: float = 0.0, linear_projection: bool = False,
    ):
        super().__init__()
        inner_dim = heads * head_dim
        self.linear_projection = linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        project = nn.Linear if linear_projection else partial(nn.Conv2d, kernel_size=1)
        self.proj_in = project(channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(inner_dim, heads, head_dim, context_dim, dropout) for _ in range(layers)]
        )
        self.proj_out = project(inner_dim, channels)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """:param x: ``[B, C, H, W]``. :param context: ``[B, L, context_dim]``. :returns: ``[B, C, H, W]``."""
        _, _, height, width = x.shape
        h = self.norm(x)
        if self.linear_projection:
            h = self.proj_in(rearrange(h, "b c h w -> b (h w) c"))  # (B, H*W, inner)
        else:
            h = rearrange(self.proj_in(h), "b c h w -> b (h w) c")  # (B, H*W, inner)
        for block in self.transformer_blocks:
            h = block(h, context, (height, width))
        if self.linear_projection:
            h = rearrange(self.proj_out(h), "b (h w) c -> b c h w", h=height)
        else:
            h = self.proj_out(rearrange(h, "b (h w) c -> b c h w", h=height))
        return x + h
