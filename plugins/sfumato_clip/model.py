"""The CLIP networks: a causal text transformer and a vision transformer mapped into one
embedding space (Radford et al. 2021, https://arxiv.org/abs/2103.00020).

Both towers use pre-norm blocks with a fused QKV projection and
``scaled_dot_product_attention``. ``conversion.py`` maps these keys to and from Hugging Face
transformers' ``CLIPModel`` layout (which keeps q, k and v separate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from .config import Activation, CLIPConfig, TextConfig, VisionConfig


def quick_gelu(x: Tensor) -> Tensor:
    """OpenAI CLIP's GELU approximation ``x * sigmoid(1.702 x)``; its checkpoints need it."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        x = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, L, Dh)
        return self.out(rearrange(x, "b h l d -> b l (h d)"))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: Activation):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, width: int, heads: int, mlp_width: int, activation: Activation, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_width, activation)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        x = x + self.attn(self.norm1(x), causal)
        return x + self.mlp(self.norm2(x))


@dataclass
class TowerOutput:
    """:param tokens: per-token states ``[B, L, D]``. :param pooled: projected embedding ``[B, E]``
    (not normalised)."""

    tokens: Tensor
    pooled: Tensor


class TextTransformer(nn.Module):
    """Token + positional embeddings, causal pre-norm transformer, final LayerNorm, pooling at
    the end-of-text token, and a linear projection into the joint space."""

    def __init__(self, config: TextConfig, embed_dim: int | None):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.blocks = nn.ModuleList(
            Block(config.width, config.heads, config.mlp_width, config.activation, config.norm_eps)
            for _ in range(config.layers)
        )
        self.final_norm = nn.LayerNorm(config.width, eps=config.norm_eps)
        self.projection = nn.Linear(config.width, embed_dim, bias=False) if embed_dim else None
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)

    @property
    def embed_dim(self) -> int:
        return self.projection.out_features if self.projection is not None else self.config.width

    def forward(self, input_ids: Tensor, layer: int = -1, normalize_tokens: bool = True) -> TowerOutput:
        """:param input_ids: ``[B, L]`` token ids, ``L <= context_length``.
        :param layer: which block's output becomes ``tokens``: -1 the last, -2 the penultimate
            ("clip skip"). The final LayerNorm is applied to it either way, as diffusers does,
            unless ``normalize_tokens`` is False (SDXL reads the penultimate states raw).
        :returns: ``tokens [B, L, D]`` and ``pooled [B, E]``, the projected state at the first
            end-of-text token (the pooled embedding always comes from the last layer)."""
        x = self.token_embedding(input_ids) + self.position_embedding[: input_ids.shape[1]]  # (B, L, D)
        chosen = len(self.blocks) + layer if layer < 0 else layer
        tokens = x
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True)
            if i == chosen:
                tokens = x
        x = self.final_norm(x)
        if normalize_tokens:
            tokens = x if chosen == len(self.blocks) - 1 else self.final_norm(tokens)
        eos = (input_ids == self.config.eos_token_id).int().argmax(dim=-1)  # (B,)
        pooled = x[torch.arange(x.shape[0], device=x.device), eos]  # (B, D)
        if self.projection is not None:
            pooled = self.projection(pooled)  # (B, E)
        return TowerOutput(tokens, pooled)


class VisionTransformer(nn.Module):
    """Patch embedding, class token, positional embeddings, pre-LayerNorm, transformer,
    post-LayerNorm on the class token and a linear projection."""

    def __init__(self, config: VisionConfig, embed_dim: int | None):
        super().__init__()
        self.config = config
        width = config.width
        self.patch_embed = nn.Conv2d(3, width, config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.position_embedding = nn.Parameter(torch.randn(config.num_patches + 1, width) * width**-0.5)
        self.pre_norm = nn.LayerNorm(width, eps=config.norm_eps)
        self.blocks = nn.ModuleList(
            Block(width, config.heads, config.mlp_width, config.activation, config.norm_eps)
            for _ in range(config.layers)
        )
        self.post_norm = nn.LayerNorm(width, eps=config.norm_eps)
        self.projection = nn.Linear(width, embed_dim, bias=False) if embed_dim else None

    @property
    def embed_dim(self) -> int:
        return self.projection.out_features if self.projection is not None else self.config.width

    def forward(self, pixels: Tensor) -> TowerOutput:
        """:param pixels: ``[B, 3, S, S]`` already resized to ``image_size`` and normalised with
        the CLIP mean and std. :returns: ``tokens [B, 1 + N, D]`` (last block, before the
        post-norm) and ``pooled [B, E]``."""
        x = rearrange(self.patch_embed(pixels), "b d h w -> b (h w) d")  # (B, N, D)
        cls = repeat(self.class_embedding, "d -> b 1 d", b=x.shape[0])
        x = torch.cat([cls, x], dim=1) + self.position_embedding  # (B, 1 + N, D)
        x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x)
        pooled = self.post_norm(x[:, 0])  # (B, D)
        if self.projection is not None:
            pooled = self.projection(pooled)  # (B, E)
        return TowerOutput(x, pooled)


class CLIP(nn.Module):
    """Both towers and the learnable logit scale (and, for SigLIP, a logit bias).

    ``logits = exp(logit_scale) * normalise(image) @ normalise(text).T (+ logit_bias)``.
    """

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.text = TextTransformer(config.text, config.embed_dim)
        self.vision = VisionTransformer(config.vision, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init))
        bias = config.logit_bias_init
        self.logit_bias = nn.Parameter(torch.tensor(bias)) if bias is not None else None

    def encode_text(self, input_ids: Tensor) -> Tensor:
        """``[B, L]`` token ids -> ``[B, E]`` text embeddings (not normalised)."""
        return self.text(input_ids).pooled

    def encode_image(self, pixels: Tensor) -> Tensor:
        """``[B, 3, S, S]`` normalised pixels -> ``[B, E]`` image embeddings (not normalised)."""
        return self.vision(pixels).pooled

    def logits(self, image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        """``[B_img, E]`` x ``[B_txt, E]`` -> ``[B_img, B_txt]`` scaled cosine similarities."""
        return similarity_logits(image_embeds, text_embeds, self.logit_scale, self.logit_bias)

    def forward(self, pixels: Tensor, input_ids: Tensor) -> Tensor:
        """Logits per image ``[B_img, B_txt]``."""
        return self.logits(self.encode_image(pixels), self.encode_text(input_ids))


def similarity_logits(
    image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor, logit_bias: Tensor | None = None
) -> Tensor:
    """Scaled cosine similarity ``exp(logit_scale) * cos(image_i, text_j)`` (+ bias), ``[B_img, B_txt]``."""
    image_embeds = F.normalize(image_embeds, dim=-1)
    text_embeds = F.normalize(text_embeds, dim=-1)
    logits = logit_scale.exp() * image_embeds @ text_embeds.T
    return logits + logit_bias if logit_bias is not None else logits
