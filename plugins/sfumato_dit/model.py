"""The diffusion transformer denoiser: DiT (Peebles & Xie 2023, https://arxiv.org/abs/2212.09748)
and PixArt-alpha (Chen et al. 2023, https://arxiv.org/abs/2310.00426).

    x_t --patchify + positions--> tokens --N blocks--> final adaLN --linear--> unpatchify --> prediction
    t (+ label) --timestep/class embeddings--> adaLN shift, scale and gate in every block
    cond.tokens --caption projection--> cross-attention in every block        (PixArt)

Parameter names follow diffusers' ``DiTTransformer2DModel`` (``norm_type = "ada_norm_zero"``)
and ``PixArtTransformer2DModel`` (``"ada_norm_single"``), so their checkpoints load unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

import sfumato

from .blocks import ADALN_EPS, AdaLayerNormSingle, DiTBlock, PixArtBlock, modulate
from .diffusers_format import load_diffusers_folder, read_dit_weights, save_diffusers_folder
from .embeddings import CaptionProjection, PatchEmbed
from .spec import TIMESTEP_FREQ_SHIFT, DiTSpec


class DiT(sfumato.Denoiser):
    """A diffusion transformer: ``forward(x [B, C, H, W], t [B], cond) -> [B, out_channels, H, W]``.

    ``H`` and ``W`` must be multiples of ``patch_size``. ``t`` is a float tensor of (possibly
    fractional) training timesteps. Conditioning: ``cond.labels`` ``[B]`` for a class-conditional
    model (label ``num_classes`` is the null class, also used when no labels are given);
    ``cond.tokens`` ``[B, L, D]`` and optionally ``cond.mask`` ``[B, L]`` (True = attend) for a
    text-conditional one. With ``learned_sigma`` the variance channels are dropped.
    """

    Spec: ClassVar[type[DiTSpec]] = DiTSpec
    #: Compiled once per class by ``[runtime] compile`` (regional compilation).
    repeated_blocks = (DiTBlock, PixArtBlock)

    def __init__(self, spec: DiTSpec):
        super().__init__()
        self.spec = spec
        dim, heads, head_dim = spec.hidden_size, spec.num_attention_heads, spec.attention_head_dim
        self.in_channels, self.out_channels = spec.in_channels, spec.prediction_channels
        self.num_classes = spec.num_classes
        self.null_label = spec.num_classes

        self.pos_embed = PatchEmbed(spec.in_channels, dim, spec.patch_size, spec.sample_size,
                                    learned=spec.positions == "learned", interpolation_scale=spec.interpolation_scale)
        block = dict(attention_bias=spec.attention_bias, norm_eps=spec.norm_eps, dropout=spec.dropout)
        patch_out = spec.patch_size**2 * spec.network_out_channels
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=ADALN_EPS)
        if spec.norm_type == "ada_norm_zero":
            freq_shift = TIMESTEP_FREQ_SHIFT["ada_norm_zero"]
            self.transformer_blocks = nn.ModuleList(
                DiTBlock(dim, heads, head_dim, spec.num_classes, freq_shift, **block) for _ in range(spec.num_layers)
            )
            self.proj_out_1 = nn.Linear(dim, 2 * dim)  # the final layer's adaLN shift and scale
            self.proj_out_2 = nn.Linear(dim, patch_out)
        else:
            self.transformer_blocks = nn.ModuleList(
                PixArtBlock(dim, heads, head_dim, spec.context_dim, **block) for _ in range(spec.num_layers)
            )
            self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
            self.proj_out = nn.Linear(dim, patch_out)
            self.adaln_single = AdaLayerNormSingle(dim, spec.micro_conditions)
            self.caption_projection = CaptionProjection(spec.caption_channels, dim) if spec.caption_channels else None
        self.initialise()

        if spec.weights:
            sfumato.load_into(self, read_dit_weights(spec.weights, spec), source=spec.weights)

    @torch.no_grad()
    def initialise(self) -> None:
        """The reference initialisation for training from scratch (DiT's ``initialize_weights``,
        PixArt's alike): Xavier-uniform linear layers and patch projection, N(0, 0.02) embeddings
        and timestep MLPs, and zeros where a block or the output must start as nothing: every
        adaLN-Zero modulation layer, PixArt's cross-attention output and the final layers. The
        network therefore predicts 0 until it is trained, and each block starts as the identity."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.pos_embed.proj.weight.view(self.pos_embed.proj.out_channels, -1))
        nn.init.zeros_(self.pos_embed.proj.bias)
        for name, module in self.named_modules():
            if name.endswith(("timestep_embedder", "resolution_embedder", "aspect_ratio_embedder", "caption_projection")):
                nn.init.normal_(module.linear_1.weight, std=0.02)
                nn.init.normal_(module.linear_2.weight, std=0.02)
            elif name.endswith("class_embedder"):
                nn.init.normal_(module.embedding_table.weight, std=0.02)
        if self.spec.norm_type == "ada_norm_zero":
            zeros = [self.proj_out_1, self.proj_out_2] + [block.norm1.linear for block in self.transformer_blocks]
        else:
            zeros = [self.proj_out] + [block.attn2.to_out[0] for block in self.transformer_blocks if block.attn2 is not None]
            nn.init.normal_(self.adaln_single.linear.weight, std=0.02)
        for layer in zeros:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, cond: sfumato.Conditioning | None = None) -> Tensor:
        """:param x: ``[B, in_channels, H, W]`` noisy sample. :param t: ``[B]`` (or scalar) timesteps.
        :returns: ``[B, out_channels, H, W]`` raw prediction."""
        spec, (batch, _, height, width) = self.spec, x.shape
        patch = spec.patch_size
        if height % patch or width % patch:
            raise sfumato.SpecError(f"[denoiser] dit cuts x_t into {patch}x{patch} patches, but x_t is {height}x{width}: "
                                    f"use a size that is a multiple of {patch} (latent pixels)")
        t = torch.as_tensor(t, device=x.device).expand(batch)  # () or (B,) -> (B,)
        h = self.pos_embed(x)  # (B, N, D), N = (H / p) * (W / p)
        if spec.norm_type == "ada_norm_zero":
            labels = self._labels(cond, batch, x.device)  # (B,) or None
            for block in self.transformer_blocks:
                h = self._run(block, h, t, labels)
            embedding = self.transformer_blocks[0].norm1.emb(t, labels, h.dtype)  # (B, D), DiT's final adaLN input
            shift, scale = self.proj_out_1(nn.functional.silu(embedding))[:, None].chunk(2, dim=-1)  # (B, 1, D) each
            h = self.proj_out_2(modulate(self.norm_out(h), shift, scale))  # (B, N, p * p * C_out)
        else:
            context, context_mask = self._context(cond, h.dtype)  # (B, L, D_ctx), (B, L)
            image_size = (height * spec.autoencoder_downscale, width * spec.autoencoder_downscale)
            modulation, embedding = self.adaln_single(t, image_size, h.dtype)  # (B, 6 D), (B, D)
            for block in self.transformer_blocks:
                h = self._run(block, h, modulation, context, context_mask)
            shift, scale = (self.scale_shift_table[None] + embedding[:, None]).chunk(2, dim=1)  # (B, 1, D) each
            h = self.proj_out(modulate(self.norm_out(h), shift, scale))  # (B, N, p * p * C_out)
        out = rearrange(h, "b (h w) (p q c) -> b c (h p) (w q)", h=height // patch, p=patch, q=patch)  # (B, C_out, H, W)
        return out[:, : self.out_channels] if spec.learned_sigma else out

    def _labels(self, cond: sfumato.Conditioning | None, batch: int, device: torch.device) -> Tensor | None:
        """The class labels ``[B]``: the given ones, or the null class when none are given."""
        if self.num_classes is None:
            return None
        if cond is not None and cond.labels is not None:
            return cond.labels.to(device=device, dtype=torch.long)
        return torch.full((batch,), self.null_label, dtype=torch.long, device=device)

    def _context(self, cond: sfumato.Conditioning | None, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
        """The (projected) token states the blocks cross-attend to and their mask; None for models without text."""
        width = self.spec.token_width
        if width is None:
            return None, None
        if cond is None or cond.tokens is None:
            raise sfumato.SpecError("[denoiser] dit cross-attends to text: it needs cond.tokens [B, L, "
                                    f"{width}] from a [text_encoder]")
        if cond.tokens.shape[-1] != width:
            raise sfumato.SpecError(f"cond.tokens have width {cond.tokens.shape[-1]}, but this DiT reads tokens of width "
                                    f"{width} ({'caption_channels' if self.spec.caption_channels else 'cross_attention_dim'}"
                                    "): pair it with the text encoder it was trained with")
        tokens = cond.tokens.to(dtype)
        if self.caption_projection is not None:
            tokens = self.caption_projection(tokens)  # (B, L, D)
        return tokens, cond.mask

    def _run(self, block: nn.Module, *args):
        """Call a block, recomputing its activations in backward when gradient checkpointing is on."""
        if self.spec.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    # -- formats --------------------------------------------------------------------------------

    @classmethod
    def from_diffusers(cls, folder: str | Path) -> DiT:
        """Build from a diffusers ``DiTTransformer2DModel`` / ``PixArtTransformer2DModel`` folder
        (``config.json`` + ``diffusion_pytorch_model.safetensors``), its spec read from the config."""
        spec, state_dict = load_diffusers_folder(folder)
        with torch.device("meta"):
            model = cls.from_spec(spec)
        return sfumato.load_into(model.to_empty(device="cpu"), state_dict, source=str(folder))

    def to_diffusers(self, folder: str | Path) -> Path:
        """Write a diffusers component folder that ``DiTTransformer2DModel`` or ``PixArtTransformer2DModel`` loads."""
        return save_diffusers_folder(self.spec, self.state_dict(), folder)

