"""The transformer blocks: DiT's adaLN-Zero block and PixArt's adaLN-single block.

Both are pre-norm blocks whose LayerNorms have no parameters of their own: the conditioning
vector supplies a shift and a scale before each sub-layer and a gate after it (Peebles & Xie
2023, https://arxiv.org/abs/2212.09748, section 3.2)::

    h = h + gate_msa * attention(norm(h) * (1 + scale_msa) + shift_msa)
    h = h + cross_attention(h, text)                                     (PixArt only)
    h = h + gate_mlp * mlp(norm(h) * (1 + scale_mlp) + shift_mlp)

adaLN-Zero computes the six vectors per block from the timestep and class embeddings
(``norm1.linear``); adaLN-single (Chen et al. 2023, https://arxiv.org/abs/2310.00426) computes them
once for all blocks and adds a learned per-block ``scale_shift_table``.

Each block is a ``block`` perturbation point (``sfumato.PatchPoint``) named by its module path
(``transformer_blocks.7``): a model patch may replace the whole block for some rows of a forward
(skip-layer guidance skips it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import sfumato

from .attention import Attention, FeedForward
from .embeddings import TimestepLabelEmbedding, TimestepSizeEmbedding

#: Epsilon of the LayerNorm inside adaLN-Zero and of the final norm (fixed in DiT and diffusers).
ADALN_EPS = 1e-6


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``x * (1 + scale) + shift``, ``shift`` and ``scale`` broadcasting over the tokens of ``x``."""
    return x * (1 + scale) + shift


class AdaLayerNormZero(nn.Module):
    """One block's adaLN-Zero: its own timestep (+ class) embedding, and a linear layer giving the
    block's six modulation vectors (diffusers' ``AdaLayerNormZero``)."""

    def __init__(self, dim: int, num_classes: int | None, freq_shift: float):
        super().__init__()
        self.emb = TimestepLabelEmbedding(dim, num_classes, freq_shift)
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, 6 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=ADALN_EPS)

    def forward(self, t: Tensor, labels: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """:returns: ``shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp``, each ``[B, 1, D]``."""
        modulation = self.linear(self.silu(self.emb(t, labels, dtype)))  # (B, 6 D)
        return modulation[:, None].chunk(6, dim=-1)


class DiTBlock(sfumato.PatchPoint, nn.Module):
    """DiT's block: self-attention and MLP, each modulated and gated by adaLN-Zero.

    The gates (and the output layer) are initialised to zero in the paper, so each block starts as
    the identity; here they start at PyTorch's default initialisation, as diffusers' do, and
    ``DiT.initialise_zero`` applies the paper's scheme for training from scratch.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, num_classes: int | None, freq_shift: float,
                 attention_bias: bool, norm_eps: float, dropout: float):
        super().__init__()
        self.norm1 = AdaLayerNormZero(dim, num_classes, freq_shift)
        self.attn1 = Attention(dim, heads, head_dim, bias=attention_bias, dropout=dropout)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.ff = FeedForward(dim, dropout)

    point_kind = sfumato.model_patches.BLOCK

    def forward(self, h: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        """:param h: ``[B, N, D]`` tokens. :param t: ``[B]``. :param labels: ``[B]`` or None. :returns: ``[B, N, D]``."""
        return self.run_block(self._block, h, t, labels)

    def _block(self, h: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(t, labels, h.dtype)
        h = h + gate_msa * self.attn1(modulate(self.norm1.norm(h), shift_msa, scale_msa))
        return h + gate_mlp * self.ff(modulate(self.norm3(h), shift_mlp, scale_mlp))


class AdaLayerNormSingle(nn.Module):
    """PixArt's adaLN-single: one conditioning vector for the whole network and one linear layer
    giving the six modulation vectors every block starts from (diffusers' ``AdaLayerNormSingle``)."""

    def __init__(self, dim: int, micro_conditions: bool):
        super().__init__()
        self.emb = TimestepSizeEmbedding(dim, micro_conditions)
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, t: Tensor, image_size: tuple[int, int], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """:returns: ``(modulation [B, 6 D], embedding [B, D])``; the final layer is modulated by the embedding."""
        embedding = self.emb(t, image_size, dtype)
        return self.linear(self.silu(embedding)), embedding


class PixArtBlock(sfumato.PatchPoint, nn.Module):
    """PixArt's block: adaLN-single-modulated self-attention, un-normalised cross-attention to the
    text tokens (none in an unconditional model), then the modulated MLP."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, attention_bias: bool,
                 norm_eps: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.attn1 = Attention(dim, heads, head_dim, bias=attention_bias, dropout=dropout)
        self.attn2 = None
        if context_dim is not None:
            self.attn2 = Attention(dim, heads, head_dim, context_dim, bias=attention_bias, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.ff = FeedForward(dim, dropout)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    point_kind = sfumato.model_patches.BLOCK

    def forward(self, h: Tensor, modulation: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        """:param h: ``[B, N, D]``. :param modulation: ``[B, 6 D]`` from adaLN-single.
        :param context: ``[B, L, context_dim]``. :param context_mask: ``[B, L]``. :returns: ``[B, N, D]``."""
        return self.run_block(self._block, h, modulation, context, context_mask)

    def _block(self, h: Tensor, modulation: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        table = self.scale_shift_table[None] + modulation.unflatten(1, (6, -1))  # (B, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = table.chunk(6, dim=1)  # (B, 1, D) each
        h = h + gate_msa * self.attn1(modulate(self.norm1(h), shift_msa, scale_msa))
        if self.attn2 is not None:
            h = h + self.attn2(h, context, context_mask)
        return h + gate_mlp * self.ff(modulate(self.norm2(h), shift_mlp, scale_mlp))
