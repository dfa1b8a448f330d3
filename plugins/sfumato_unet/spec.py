"""``UNetSpec``: one configuration family from a ~1M-parameter pixel model to the SD 1.x U-Net."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

import sfumato

CONFIG_DIR = Path(__file__).with_name("configs")


class UNetSpec(sfumato.ComponentSpec):
    """The architecture (and optional weights) of a U-Net denoiser.

    Resolution levels are numbered from 0 (full resolution); level ``i`` has
    ``block_out_channels[i]`` channels and every level but the last halves the resolution.
    The defaults are a small pixel-space model for 3-channel images.
    """

    type: Literal["unet"] = "unet"
    weights: sfumato.SpecPath | None = Field(
        None,
        description="Weights to load: a sfumato/diffusers safetensors file, a diffusers component folder "
        "(config.json + diffusion_pytorch_model.safetensors) or a Stable Diffusion 1.x single-file "
        "safetensors checkpoint (its model.diffusion_model.* keys). None: random initialisation.",
    )
    in_channels: int = Field(3, ge=1, description="Channels of the noisy input x_t (3 for RGB pixels, 4 for SD latents).")
    out_channels: int = Field(3, ge=1, description="Channels of the prediction (usually equal to in_channels).")
    sample_size: int | None = Field(
        None, ge=1, description="Resolution the model was trained at (pixels of its input); informational, "
        "a pipeline's default size. Other sizes work too, odd ones included.",
    )
    block_out_channels: list[int] = Field(
        [32, 64, 64], min_length=1, description="Channels of each resolution level, from full resolution down."
    )
    layers_per_block: int = Field(
        1, ge=1, description="Residual blocks per level on the way down; the way up has one more per level."
    )
    attention: list[bool] = Field(
        [False, True, True],
        description="Per level: whether each residual block of that level is followed by an attention block.",
    )
    mid_attention: bool = Field(True, description="Whether the middle block has an attention block.")
    attention_heads: int | list[int] | None = Field(
        None, description="Number of attention heads, one for all levels or one per level (SD 1.x: 8). "
        "Head width is then channels // heads. Set this or attention_head_dim, not both.",
    )
    attention_head_dim: int | None = Field(
        None, ge=1, description="Width of each attention head (heads = channels // width). Neither set: one head.",
    )
    cross_attention_dim: int | None = Field(
        None, ge=1, description="Width of the token states in cond.tokens (SD 1.x: 768). Set: attention blocks are "
        "SD transformer blocks (self-attention, cross-attention, GEGLU feed-forward); None: DDPM-style "
        "spatial self-attention blocks and no text conditioning.",
    )
    transformer_layers: int | list[int] = Field(
        1, description="Transformer blocks inside each attention block (cross-attention models): one number for "
        "all levels, or one per level (SDXL: [1, 2, 10]); the middle block has the last level's.",
    )
    linear_projection: bool = Field(
        False, description="Transformer in/out projections are Linear layers (SD 2.x) rather than 1x1 convolutions (SD 1.x)."
    )
    addition_embed_type: Literal["text_time"] | None = Field(
        None, description="Further conditioning added to the time embedding: 'text_time' is SDXL's, the pooled text "
        "embedding (extras['text_embeds']) and the size micro-conditioning (extras['time_ids']) through an MLP. "
        "None: none (SD 1.x, 2.x).",
    )
    addition_time_embed_dim: int | None = Field(
        None, ge=1, description="Width of the sinusoidal embedding of each of the six time_ids ('text_time'; SDXL: 256).",
    )
    projection_class_embeddings_input_dim: int | None = Field(
        None, ge=1, description="Input width of the 'text_time' MLP: the text_embeds width + 6 * "
        "addition_time_embed_dim (SDXL: 1280 + 1536 = 2816).",
    )
    addition_text_encoder: str = Field(
        "text_encoder_2", description="'text_time' models: the spec table of the second text encoder, whose "
        "token states are concatenated to [text_encoder]'s and whose pooled embedding is text_embeds.",
    )
    force_zeros_for_empty_prompt: bool = Field(
        True, description="'text_time' models: a call without a negative prompt gets zeros as its negative "
        "conditioning (diffusers' SDXL pipelines), not the encoded empty prompt.",
    )
    num_classes: int | None = Field(
        None, ge=1, description="Number of classes of a class-conditional model (labels from cond.labels); None: no class embedding.",
    )
    null_class: bool = Field(
        False, description="Add one extra 'unconditional' class with label num_classes, for classifier-free guidance "
        "(https://arxiv.org/abs/2207.12598); used when no labels are given.",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout inside residual and transformer blocks (training only).")
    norm_num_groups: int = Field(32, ge=1, description="Groups of every GroupNorm in residual and attention blocks.")
    norm_eps: float = Field(1e-5, gt=0, description="Epsilon of the residual blocks' GroupNorms.")
    flip_sin_to_cos: bool = Field(True, description="Timestep embedding puts cosines first (as SD was trained).")
    freq_shift: float = Field(0.0, description="Timestep embedding frequency shift: exp(-ln(10000) i / (dim/2 - shift)).")
    downsample_padding: int = Field(1, ge=0, le=1, description="Padding of the stride-2 downsampling convolution "
                                    "(0: pad right/bottom by one first, the original LDM convention).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute each block's activations in the backward pass: less memory, slower training."
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> UNetSpec:
        levels = len(self.block_out_channels)
        if len(self.attention) != levels:
            raise ValueError(f"attention has {len(self.attention)} entries; it needs one per level ({levels})")
        if self.attention_heads is not None and self.attention_head_dim is not None:
            raise ValueError("set attention_heads or attention_head_dim, not both")
        if isinstance(self.attention_heads, list) and len(self.attention_heads) != levels:
            raise ValueError(f"attention_heads has {len(self.attention_heads)} entries; it needs one per level ({levels})")
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups:
                raise ValueError(f"block_out_channels {channels} is not divisible by norm_num_groups {self.norm_num_groups}")
        if self.null_class and self.num_classes is None:
            raise ValueError("null_class needs num_classes")
        if isinstance(self.transformer_layers, list) and len(self.transformer_layers) != levels:
            raise ValueError(f"transformer_layers has {len(self.transformer_layers)} entries; it needs one per level "
                             f"({levels})")
        if min([self.transformer_layers] if isinstance(self.transformer_layers, int) else self.transformer_layers) < 1:
            raise ValueError("transformer_layers must be at least 1")
        if self.addition_embed_type == "text_time" and (
                self.addition_time_embed_dim is None or self.projection_class_embeddings_input_dim is None):
            raise ValueError("addition_embed_type 'text_time' needs addition_time_embed_dim and "
                             "projection_class_embeddings_input_dim")
        return self

    def transformer_layers_at(self, level: int) -> int:
        """Transformer blocks in each attention block of ``level`` (-1: the middle block)."""
        layers = self.transformer_layers
        return layers if isinstance(layers, int) else layers[level]

    def heads_at(self, level: int) -> tuple[int, int]:
        """``(heads, head_dim)`` of the attention blocks at ``level`` (-1: the middle block)."""
        channels = self.block_out_channels[level]
        if self.attention_head_dim is not None:
            return channels // self.attention_head_dim, self.attention_head_dim
        if self.attention_heads is not None:
            heads = self.attention_heads[level] if isinstance(self.attention_heads, list) else self.attention_heads
            return heads, channels // heads
        return 1, channels

    @property
    def num_class_embeds(self) -> int:
        """Rows of the class embedding table (the null class adds one)."""
        return (self.num_classes or 0) + int(self.null_class)


def unet_config(name: str) -> UNetSpec:
    """A shipped configuration by name (``"sd15"``: the Stable Diffusion 1.x U-Net)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise ValueError(f"unknown U-Net config {name!r}; shipped configs: {known}")
    return UNetSpec.model_validate(json.loads(path.read_text()))
