"""Architecture configs for CLIP (https://arxiv.org/abs/2103.00020) and the shipped presets.

One config family covers tiny test models and OpenAI's ViT-B/32, ViT-B/16 and ViT-L/14; the text
tower of ViT-L/14 is the text encoder of Stable Diffusion 1.x. Configs are pydantic models so they
sit inline in an encoder's spec (``architecture = "ViT-L/14"`` or a full table) and travel in
safetensors metadata, so a weights file says what architecture it holds.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, field_validator

import sfumato

Activation = Literal["quick_gelu", "gelu"]


class TowerConfig(BaseModel):
    """What both transformers share (defaults: OpenAI ViT-B's text tower)."""

    model_config = sfumato.ComponentSpec.model_config  # validated as strictly as the spec it sits in

    width: int = Field(512, description="Transformer width (token state size D).")
    layers: int = Field(12, description="Number of transformer blocks.")
    heads: int = Field(8, description="Attention heads; must divide width.")
    mlp_width: int = Field(2048, description="Hidden width of each block's MLP.")
    activation: Activation = Field(
        "quick_gelu", description="MLP activation: OpenAI's x*sigmoid(1.702x) or exact GELU."
    )
    norm_eps: float = Field(1e-5, description="LayerNorm epsilon.")


class TextConfig(TowerConfig):
    """The causal text transformer."""

    vocab_size: int = Field(49408, description="Token vocabulary size (49408 for the CLIP BPE).")
    context_length: int = Field(77, description="Tokens per caption, start and end tokens included.")
    eos_token_id: int = Field(
        49407, description="End-of-text token id; the pooled state is taken at its first occurrence."
    )


class VisionConfig(TowerConfig):
    """The vision transformer (ViT, https://arxiv.org/abs/2010.11929); defaults: ViT-B/32."""

    image_size: int = Field(224, description="Input resolution; images are resized to it.")
    patch_size: int = Field(32, description="Side of each square patch.")
    width: int = Field(768, description="Transformer width.")
    heads: int = Field(12, description="Attention heads; must divide width.")
    mlp_width: int = Field(3072, description="Hidden width of each block's MLP.")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class CLIPConfig(BaseModel):
    """Both towers plus the shared embedding space."""

    model_config = sfumato.ComponentSpec.model_config  # validated as strictly as the spec it sits in

    embed_dim: int = Field(
        512, ge=0,
        description="Width of the joint embedding space (the projections' output). 0: no "
        "projections, as in a bare CLIPTextModel such as Stable Diffusion's text encoder.",
    )
    text: TextConfig = Field(default_factory=TextConfig, description="Text tower.")
    vision: VisionConfig = Field(default_factory=VisionConfig, description="Vision tower.")
    logit_scale_init: float = Field(
        math.log(1 / 0.07), description="Initial log of the logit scale (temperature 0.07 in CLIP)."
    )
    @field_validator("embed_dim", mode="before")
    @classmethod
    def _no_projection(cls, value: object) -> object:
        """None (written by older files, and by transformers for a bare tower) means 0: a spec
        field whose None differed from its default would not survive TOML or a lock."""
        return 0 if value is None else value

    logit_bias_init: float | None = Field(
        None, description="Initial logit bias; set it (SigLIP uses -10) to add a learnable bias."
    )


def _preset(embed: int, text: tuple[int, int, int], vision: tuple[int, int, int, int]) -> CLIPConfig:
    """A CLIP config from (width, layers, heads) per tower; MLP width is 4 x width, as in OpenAI's."""
    tw, tl, th = text
    vw, vl, vh, patch = vision
    return CLIPConfig(
        embed_dim=embed,
        text=TextConfig(width=tw, layers=tl, heads=th, mlp_width=4 * tw),
        vision=VisionConfig(width=vw, layers=vl, heads=vh, mlp_width=4 * vw, patch_size=patch),
    )


PRESETS: dict[str, CLIPConfig] = {
    # Tiny models for tests and the shapes/digits recipes: 32 px images, 2-layer towers.
    "tiny": CLIPConfig(
        embed_dim=64,
        text=TextConfig(width=64, layers=2, heads=4, mlp_width=256),
        vision=VisionConfig(image_size=32, patch_size=8, width=64, layers=2, heads=4, mlp_width=256),
    ),
    "ViT-B/32": _preset(512, (512, 12, 8), (768, 12, 12, 32)),
    "ViT-B/16": _preset(512, (512, 12, 8), (768, 12, 12, 16)),
    "ViT-L/14": _preset(768, (768, 12, 12), (1024, 24, 16, 14)),
}


def resolve_config(architecture: str | CLIPConfig) -> CLIPConfig:
    """A preset name or a config, as a fresh config."""
    if isinstance(architecture, CLIPConfig):
        return architecture.model_copy(deep=True)
    if architecture not in PRESETS:
        raise ValueError(f"unknown CLIP architecture {architecture!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[architecture].model_copy(deep=True)


def list_models() -> list[str]:
    """The names of the shipped architecture presets."""
    return list(PRESETS)
