"""Multi-head attention, and the spatial self-attention block of pixel-space U-Nets.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` so PyTorch picks the
fused (flash / memory-efficient) kernel for the device, and the projections of one input run as
one matmul (q, k and v for self-attention; k and v of the context for cross-attention).

Every attention is a perturbation point (``sfumato.PatchPoint``), ``self-attention`` or
``cross-attention``, named by its module path (``mid_block.attentions.0.transformer_blocks.0.attn1``,
diffusers' names): a model patch may replace its ``attend(q, k, v)`` for some rows of a forward.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn.functional import linear, scaled_dot_product_attention

import sfumato


class Attention(sfumato.PatchPoint, nn.Module):
    """Multi-head scaled dot-product attention (https://arxiv.org/abs/1706.03762).

    Queries come from ``x``; keys and values from ``context`` (cross-attention) or from ``x``
    itself (self-attention): a ``cross-attention`` or ``self-attention`` perturbation point.

    :param query_dim: width of ``x``. :param context_dim: width of ``context`` (None: self-attention).
    :param bias: whether the q/k/v projections have biases (the output projection always has one).
    """

    def __init__(
        self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None,
        bias: bool = False, dropout: float = 0.0,
    ):
        super().__init__()
        inner_dim = heads * head_dim
        self.heads = heads
        self.point_kind = sfumato.model_patches.SELF_ATTENTION if context_dim is None else \
            sfumato.model_patches.CROSS_ATTENTION
        self.to_q = nn.Linear(query_dim, inner_dim, bias=bias)
        self.to_k = nn.Linear(context_dim or query_dim, inner_dim, bias=bias)
        self.to_v = nn.Linear(context_dim or query_dim, inner_dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim), nn.Dropout(dropout)])

    def forward(self, x: Tensor, context: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        """:param x: ``[B, N, query_dim]``. :param context: ``[B, L, context_dim]``.
        :param size: ``(height, width)`` of the feature map ``x``'s tokens come from (for patches).
        :returns: ``[B, N, query_dim]``."""
        if context is None:  # self-attention: q, k and v in one matmul
            qkv = linear(x, *self._fused(self.to_q, self.to_k, self.to_v))  # (B, N, 3 * inner)
            q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.heads)
        else:  # cross-attention: k and v of the context in one matmul
            q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
            kv = linear(context, *self._fused(self.to_k, self.to_v))  # (B, L, 2 * inner)
            k, v = rearrange(kv, "b l (two h d) -> two b h l d", two=2, h=self.heads)
        out = self.run_attention(scaled_dot_product_attention, q, k, v, size)  # (B, heads, N, head_dim)
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.to_out[1](self.to_out[0](out))

    @staticmethod
    def _fused(*projections: nn.Linear) -> tuple[Tensor, Tensor | None]:
        """The weights (and biases) of several projections of one input stacked into one, so they
        run as one matmul. The parameters stay separate (checkpoint keys are diffusers'); stacking
        a few weight matrices costs far less than the matmuls it merges."""
        weight = torch.cat([p.weight for p in projections])  # (k * inner, in)
        bias = torch.cat([p.bias for p in projections]) if projections[0].bias is not None else None
        return weight, bias


class SpatialSelfAttention(Attention):
    """Self-attention over the pixels of a feature map, with a group norm and a residual
    connection: the attention block of DDPM's U-Net (https://arxiv.org/abs/2006.11239)."""

    def __init__(self, channels: int, heads: int, head_dim: int, groups: int, eps: float):
        super().__init__(channels, heads, head_dim, bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``context`` is accepted and ignored, so every attention block has one signature."""
        _, _, height, width = x.shape
        h = rearrange(self.group_norm(x), "b c h w -> b (h w) c")
        h = super().forward(h, size=(height, width))  # (B, H*W, C)
        return x + rearrange(h, "b (h w) c -> b c h w", h=height)
