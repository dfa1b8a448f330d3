"""Multi-head attention with an optional key mask, and the transformer's feed-forward network.

Parameter names are diffusers' (``to_q``, ``to_k``, ``to_v``, ``to_out.0``; ``ff.net.0.proj``,
``ff.net.2``). Attention runs through ``scaled_dot_product_attention`` so PyTorch picks the fused
kernel for the device.

Every attention is a perturbation point (``sfumato.PatchPoint``), ``self-attention`` (``attn1``) or
``cross-attention`` (``attn2``), named by its module path (``transformer_blocks.3.attn1``): a model
patch may replace its ``attend(q, k, v)`` for some rows of a forward. The image tokens' grid is
not known here: patches that need it (SEG's blur) take the tokens for a square.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn.functional import scaled_dot_product_attention

import sfumato

#: Added to the attention scores of masked-out keys, as diffusers' PixArt does: finite, so a row
#: whose every key is masked attends uniformly instead of producing NaN.
MASKED_KEY_BIAS = -10000.0


class Attention(sfumato.PatchPoint, nn.Module):
    """Multi-head scaled dot-product attention (https://arxiv.org/abs/1706.03762).

    Queries come from ``x``; keys and values from ``context`` (cross-attention) or from ``x``: a
    ``cross-attention`` or ``self-attention`` perturbation point.

    :param context_dim: width of ``context``; None: self-attention.
    :param bias: whether q, k and v have biases (the output projection always has one).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None,
                 bias: bool = True, dropout: float = 0.0):
        super().__init__()
        inner_dim = heads * head_dim
        self.heads = heads
        self.point_kind = sfumato.model_patches.SELF_ATTENTION if context_dim is None else \
            sfumato.model_patches.CROSS_ATTENTION
        self.to_q = nn.Linear(dim, inner_dim, bias=bias)
        self.to_k = nn.Linear(context_dim or dim, inner_dim, bias=bias)
        self.to_v = nn.Linear(context_dim or dim, inner_dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, dim), nn.Dropout(dropout)])

    def forward(self, x: Tensor, context: Tensor | None = None, key_mask: Tensor | None = None) -> Tensor:
        """:param x: ``[B, N, dim]``. :param context: ``[B, L, context_dim]`` (None: attend to ``x``).
        :param key_mask: ``[B, L]``, True (or 1) where a key may be attended to.
        :returns: ``[B, N, dim]``."""
        context = x if context is None else context
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k = rearrange(self.to_k(context), "b l (h d) -> b h l d", h=self.heads)
        v = rearrange(self.to_v(context), "b l (h d) -> b h l d", h=self.heads)
        bias = None
        if key_mask is not None:
            keep = key_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, L)
            bias = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill(~keep, MASKED_KEY_BIAS)
        out = self.run_attention(scaled_dot_product_attention, q, k, v, mask=bias)  # (B, heads, N, head_dim)
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.to_out[1](self.to_out[0](out))


class GELUProjection(nn.Module):
    """``gelu_tanh(proj(x))``: the first layer of the feed-forward network (diffusers' ``GELU``
    with ``approximate="tanh"``, its ``activation_fn="gelu-approximate"``)."""

    def __init__(self, dim: int, inner_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner_dim)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """The transformer MLP ``dim -> 4 dim -> dim`` with a tanh-approximated GELU, as DiT and PixArt use."""

    def __init__(self, dim: int, dropout: float = 0.0, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GELUProjection(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
