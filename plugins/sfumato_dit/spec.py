"""``DiTSpec``: the architecture (and optional weights) of a diffusion transformer.

One family covers DiT (class labels, adaLN-Zero in every block; Peebles & Xie 2023,
https://arxiv.org/abs/2212.09748) and PixArt-alpha (text through cross-attention, one shared
adaLN-single; Chen et al. 2023, https://arxiv.org/abs/2310.00426). Field names are diffusers'
config names where diffusers has the option, so a ``config.json`` reads across one to one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import sfumato

NormType = Literal["ada_norm_zero", "ada_norm_single"]

#: ``downscale_freq_shift`` of the 256-channel timestep sinusoid, per ``norm_type``: diffusers'
#: DiT embeds timesteps with shift 1, PixArt with shift 0 (both cosines first). Weights are
#: trained with one, so it follows the model family rather than being a free option.
TIMESTEP_FREQ_SHIFT: dict[str, float] = {"ada_norm_zero": 1.0, "ada_norm_single": 0.0}
#: Width of the sinusoidal timestep (and micro-condition) embedding fed to the MLPs.
TIMESTEP_CHANNELS = 256


class DiTSpec(sfumato.ComponentSpec):
    """A DiT / PixArt transformer denoiser. The defaults are DiT-S/2 (paper table 1: 12 layers,
    hidden width 384, 6 heads, 2x2 patches) for unconditional 32x32x4 latents."""

    type: Literal["dit"] = "dit"
    weights: sfumato.SpecPath | None = Field(
        None,
        description="Weights to load: a safetensors file (sfumato's or diffusers' keys, which are the same) or a "
        "diffusers component folder (config.json + diffusion_pytorch_model.safetensors) of a "
        "DiTTransformer2DModel or PixArtTransformer2DModel; the spec must describe the architecture the weights "
        "were trained with (a mismatch is an error listing the fields to change). None: random initialisation.",
    )
    sample_size: int = Field(
        32, ge=1, description="Side of the square inputs the model was trained at, in pixels of x_t (latent pixels "
        "for a latent model). Sets the patch grid that sin-cos positions are scaled to and the grid learned "
        "positions exist for; other sizes work with sin-cos positions.",
    )
    in_channels: int = Field(4, ge=1, description="Channels of the noisy input x_t (4 for SD-style latents).")
    out_channels: int | None = Field(
        None, ge=1, description="Channels of the prediction the denoiser returns; None: in_channels.",
    )
    learned_sigma: bool = Field(
        False, description="The network also predicts the variance interpolation of Improved DDPM "
        "(https://arxiv.org/abs/2102.09672), as DiT-XL/2 and PixArt do: its last layer outputs 2 * out_channels "
        "channels (diffusers' out_channels = 2 * in_channels) and the denoiser returns the first half, the "
        "epsilon / v prediction, dropping the variance as diffusers' DiT and PixArt pipelines do.",
    )
    patch_size: int = Field(2, ge=1, description="Side of the square patches x_t is cut into; each patch is one token.")
    num_layers: int = Field(12, ge=1, description="Number of transformer blocks.")
    num_attention_heads: int = Field(6, ge=1, description="Attention heads per block.")
    attention_head_dim: int = Field(
        64, ge=1, description="Width of each head; the hidden width is num_attention_heads * attention_head_dim.",
    )
    norm_type: NormType = Field(
        "ada_norm_zero",
        description="How the timestep (and class) modulate the blocks. ada_norm_zero: DiT's adaLN-Zero, every block "
        "has its own timestep + class embedding and a linear layer giving shift, scale and gate for its attention "
        "and MLP; timesteps are embedded with frequency shift 1. ada_norm_single: PixArt's adaLN-single, one shared "
        "timestep MLP and linear layer, plus a learned per-block scale_shift_table; frequency shift 0; the blocks "
        "may cross-attend to text.",
    )
    num_classes: int | None = Field(
        None, ge=1, description="Classes of a class-conditional model (labels 0 .. num_classes - 1 in cond.labels; "
        "needs norm_type = ada_norm_zero). Label num_classes is the null class, trained by condition dropout "
        "for classifier-free guidance and used when no labels are given. None: no class embedding "
        "(diffusers' DiT calls this num_embeds_ada_norm).",
    )
    cross_attention_dim: int | None = Field(
        None, ge=1, description="Width of the token states the cross-attention reads: cond.tokens directly, or "
        "their caption projection (then it must be the hidden width, the default). Set this or caption_channels "
        "for a text-conditional model (needs norm_type = ada_norm_single); both None: no cross-attention.",
    )
    caption_channels: int | None = Field(
        None, ge=1, description="Width of cond.tokens when they first go through PixArt's caption projection (a "
        "two-layer GELU MLP to the hidden width; 4096 for T5-XXL); None: no projection.",
    )
    positions: Literal["sincos", "learned"] = Field(
        "sincos", description="Patch positions: sincos, the fixed 2-D sine-cosine table of MAE and DiT, scaled to "
        "any grid (as diffusers does); learned, a trained table for the sample_size grid only (initialised "
        "to the sin-cos table; not a diffusers option).",
    )
    interpolation_scale: float = Field(
        1.0, gt=0, description="Positions are divided by this (sin-cos only): PixArt trains its 512 and 1024 "
        "models with 1 and 2 (diffusers' default: max(sample_size // 64, 1) for PixArt, 1 for DiT).",
    )
    micro_conditions: bool = Field(
        False, description="PixArt-alpha 1024's micro-conditions (diffusers' use_additional_conditions): the image "
        "resolution and aspect ratio, derived from the size of x_t times autoencoder_downscale as diffusers' "
        "pipeline computes them, are embedded and added to the timestep embedding. Needs ada_norm_single and a "
        "hidden width divisible by 3.",
    )
    autoencoder_downscale: int = Field(
        8, ge=1, description="Image pixels per latent pixel, for micro_conditions (8 for SD-style VAEs).",
    )
    attention_bias: bool = Field(True, description="The q, k and v projections have biases (both DiT and PixArt: true).")
    norm_eps: float = Field(
        1e-5, gt=0, description="Epsilon of the blocks' affine-free LayerNorms outside the adaLN-Zero norm (which "
        "always uses 1e-6): DiT 1e-5, PixArt 1e-6.",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout in attention outputs and MLPs (training only).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute each block's activations in the backward pass: less memory, slower training.",
    )

    @model_validator(mode="after")
    def _check_architecture(self) -> DiTSpec:
        hidden = self.hidden_size
        if self.sample_size % self.patch_size:
            raise ValueError(f"sample_size {self.sample_size} is not a multiple of patch_size {self.patch_size}")
        if hidden % 4:
            raise ValueError(f"the hidden width num_attention_heads * attention_head_dim = {hidden} must be a multiple "
                             "of 4 (the 2-D sin-cos positions give a quarter of it to each of sin/cos of x and y)")
        if self.num_classes is not None and self.norm_type != "ada_norm_zero":
            raise ValueError("num_classes needs norm_type = 'ada_norm_zero' (DiT's class embedding lives in its "
                             "adaLN-Zero layers); text conditioning uses ada_norm_single")
        if self.text_conditional and self.norm_type != "ada_norm_single":
            raise ValueError("cross_attention_dim / caption_channels need norm_type = 'ada_norm_single' "
                             "(PixArt's cross-attention blocks)")
        if self.caption_channels is not None and self.cross_attention_dim not in (None, hidden):
            raise ValueError(f"with caption_channels the caption projection outputs the hidden width {hidden}, so "
                             f"cross_attention_dim must be {hidden} or unset, not {self.cross_attention_dim}")
        if self.micro_conditions and (self.norm_type != "ada_norm_single" or hidden % 3):
            raise ValueError(f"micro_conditions need norm_type = 'ada_norm_single' and a hidden width divisible "
                             f"by 3 (it is {hidden})")
        return self

    @property
    def hidden_size(self) -> int:
        """The width of every token: ``num_attention_heads * attention_head_dim``."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def prediction_channels(self) -> int:
        """Channels of the prediction the denoiser returns."""
        return self.out_channels or self.in_channels

    @property
    def network_out_channels(self) -> int:
        """Channels the last layer computes (twice the prediction's with ``learned_sigma``)."""
        return self.prediction_channels * (2 if self.learned_sigma else 1)

    @property
    def text_conditional(self) -> bool:
        """Whether the blocks cross-attend to ``cond.tokens``."""
        return self.cross_attention_dim is not None or self.caption_channels is not None

    @property
    def context_dim(self) -> int | None:
        """Width of the states the cross-attention keys and values are computed from."""
        if self.caption_channels is not None:
            return self.hidden_size
        return self.cross_attention_dim

    @property
    def token_width(self) -> int | None:
        """Width ``cond.tokens`` must have."""
        return self.caption_channels or self.cross_attention_dim
