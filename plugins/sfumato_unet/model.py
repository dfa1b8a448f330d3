"""The U-Net denoiser (Ronneberger et al., https://arxiv.org/abs/1505.04597, as used by DDPM,
https://arxiv.org/abs/2006.11239, and Stable Diffusion, https://arxiv.org/abs/2112.10752).

    x_t --conv_in--> down blocks --> mid block --> up blocks (+ skips) --norm/act/conv_out--> prediction
    t --sinusoid--> time MLP (+ class embedding) = emb, added inside every residual block
    cond.tokens ----------------------------------> cross-attention in every transformer block

Parameter names follow the diffusers layout (``down_blocks.0.resnets.0.conv1.weight``), so that
format loads without renaming; Stable Diffusion's original key names are converted in ``ldm.py``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

import sfumato

from .attention import SpatialSelfAttention
from .blocks import AttentionFactory, DeepBranch, DownBlock, MidBlock, UpBlock
from .checkpoints import read_unet_weights
from .diffusers_format import load_diffusers_folder, save_diffusers_folder
from .ldm import unet_state_dict_from_ldm
from .spec import UNetSpec, unet_config
from .text_time import TEXT_TIME_INPUTS, text_time_conditioning, text_time_input
from .transformer import SpatialTransformer

#: Extras a forward adds to the skips and the middle block (``sfumato.conditioning.EXTRA_NAMES``).
RESIDUAL_PREFIXES = ("down_block_residual.", "mid_block_residual")


class UNet(sfumato.Denoiser):
    """A configurable U-Net: ``forward(x [B, C, H, W], t [B], cond) -> [B, out_channels, H, W]``.

    Conditioning: ``cond.tokens`` ``[B, L, cross_attention_dim]`` for cross-attention models (the
    mask is not used: SD-style models attend to every token, as they were trained);
    ``cond.labels`` ``[B]`` for class-conditional ones (label ``num_classes`` is the null class
    when ``null_class`` is set, and is used when no labels are given). ``cond.extras`` it reads:
    ``text_embeds`` ``[B, D]`` and ``time_ids`` ``[B, 6]`` when ``addition_embed_type`` is
    ``"text_time"`` (SDXL; ``extra_conditioning`` makes them, see ``text_time.py``), and
    ``down_block_residual.<i>`` / ``mid_block_residual`` when present, added to skip ``i`` (counted
    from ``conv_in``'s output, as diffusers' ``down_block_res_samples``) and to the middle block's
    output (a ControlNet's residuals).
    """

    Spec: ClassVar[type[UNetSpec]] = UNetSpec
    #: Compiled once per class by ``[runtime] compile`` (regional compilation): the residual blocks
    #: and the attention blocks of every level (a ``SpatialTransformer`` with its transformer blocks).
    repeated_blocks = (sfumato.nn.ResnetBlock, SpatialTransformer, SpatialSelfAttention)

    def __init__(self, spec: UNetSpec):
        super().__init__()
        self.spec = spec
        self._residuals: dict[str, Tensor] = {}  # a forward's ControlNet residuals (extras)
        self.in_channels, self.out_channels = spec.in_channels, spec.out_channels
        channels = spec.block_out_channels
        levels = len(channels)
        embed_dim = channels[0] * 4
        resnet = dict(embed_dim=embed_dim, groups=spec.norm_num_groups, eps=spec.norm_eps, dropout=spec.dropout)

        self.time_embedding = sfumato.nn.TimestepEmbedding(channels[0], embed_dim)
        self.class_embedding = nn.Embedding(spec.num_class_embeds, embed_dim) if spec.num_classes else None
        self.num_classes = spec.num_classes
        self.null_label = spec.num_classes if spec.num_classes and spec.null_class else None
        if spec.addition_embed_type == "text_time":  # SDXL: pooled text + size micro-conditioning
            self.add_embedding = sfumato.nn.TimestepEmbedding(spec.projection_class_embeddings_input_dim, embed_dim)
            self.call_inputs = TEXT_TIME_INPUTS
        self.conv_in = nn.Conv2d(spec.in_channels, channels[0], 3, padding=1)

        self.down_blocks = nn.ModuleList()
        for level, out in enumerate(channels):
            self.down_blocks.append(DownBlock(
                channels[max(level - 1, 0)], out, layers=spec.layers_per_block, **resnet,
                attention=self._attention(level) if spec.attention[level] else None,
                downsample=level < levels - 1, downsample_padding=spec.downsample_padding,
            ))
        self.mid_block = MidBlock(channels[-1], **resnet, attention=self._attention(-1) if spec.mid_attention else None)
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            self.up_blocks.append(UpBlock(
                in_channels=channels[max(level - 1, 0)], prev_channels=channels[min(level + 1, levels - 1)],
                out_channels=channels[level], layers=spec.layers_per_block + 1, **resnet,
                attention=self._attention(level) if spec.attention[level] else None, upsample=level > 0,
            ))
        # (no weights) the deep-branch points: deep.i is the U-Net below level i
        self.deep = nn.ModuleList(DeepBranch(level) for level in range(1, levels))
        self.conv_norm_out = nn.GroupNorm(spec.norm_num_groups, channels[0], eps=spec.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], spec.out_channels, 3, padding=1)

        if spec.weights:
            sfumato.load_into(self, read_unet_weights(spec.weights, spec), source=spec.weights)

    def _attention(self, level: int) -> AttentionFactory:
        """The attention block of ``level``: an SD transformer when the model cross-attends to
        tokens, DDPM spatial self-attention otherwise."""
        spec, channels = self.spec, self.spec.block_out_channels[level]
        heads, head_dim = spec.heads_at(level)
        if spec.cross_attention_dim is None:
            return partial(SpatialSelfAttention, channels, heads, head_dim, spec.norm_num_groups, spec.norm_eps)
        return partial(
            SpatialTransformer, channels, heads, head_dim, spec.cross_attention_dim, spec.norm_num_groups,
            layers=spec.transformer_layers_at(level), dropout=spec.dropout, linear_projection=spec.linear_projection,
        )

    def embed(self, t: Tensor, labels: Tensor | None, dtype: torch.dtype,
              extras: dict[str, Tensor] | None = None) -> Tensor:
        """The vector each residual block receives: time MLP(sinusoid(t)) (+ class embedding)
        (+ SDXL's MLP of ``text_embeds`` and sinusoid(``time_ids``), from ``extras``). ``[B, 4 * C0]``."""
        spec = self.spec
        emb = self.time_embedding(
            sfumato.nn.timestep_embedding(t, spec.block_out_channels[0], spec.flip_sin_to_cos, spec.freq_shift).to(dtype)
        )
        if spec.addition_embed_type == "text_time":
            emb = emb + self.add_embedding(text_time_input(spec, extras or {}, t.shape[0]).to(dtype))
        if self.class_embedding is not None:
            if labels is None:
                if not spec.null_class:
                    raise ValueError("this U-Net is class-conditional: pass cond=Conditioning(labels=...)")
                labels = torch.full((t.shape[0],), spec.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.class_embedding(labels).to(dtype)
        return emb

    def _context(self, cond: sfumato.Conditioning | None, dtype: torch.dtype) -> Tensor | None:
        """The token states to cross-attend to (None for models without cross-attention)."""
        width = self.spec.cross_attention_dim
        if width is None:
            return None
        if cond is None or cond.tokens is None:
            raise ValueError("this U-Net cross-attends to text: pass cond=Conditioning(tokens=[B, L, D])")
        if cond.tokens.shape[-1] != width:
            raise ValueError(f"cond.tokens have width {cond.tokens.shape[-1]}; this U-Net expects cross_attention_dim={width}")
        return cond.tokens.to(dtype)

    def forward(self, x: Tensor, t: Tensor, cond: sfumato.Conditioning | None = None) -> Tensor:
        """:param x: ``[B, in_channels, H, W]`` noisy sample. :param t: ``[B]`` (or scalar) timesteps.
        :returns: ``[B, out_channels, H, W]`` raw prediction."""
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])  # () or (B,) -> (B,)
        context = self._context(cond, x.dtype)  # (B, L, D) or None
        extras = cond.extras if cond is not None else {}
        emb = self.embed(t, cond.labels if cond is not None else None, x.dtype, extras)  # (B, 4 * C0)

        h = self.conv_in(x)  # (B, C0, H, W)
        self._residuals = {k: v for k, v in extras.items() if k.startswith(RESIDUAL_PREFIXES)}
        try:
            h = self._level(0, h, emb, context, None)
        finally:
            self._residuals = {}
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))  # (B, out_channels, H, W)

    def _with_residuals(self, level: int, skips: list[Tensor]) -> list[Tensor]:
        """The skips of ``level`` with the forward's ``down_block_residual.<i>`` extras added (a
        ControlNet's): ``i`` counts the skips as diffusers' ``down_block_res_samples`` does, from
        ``conv_in``'s output; the maps going down stay as they were, as in diffusers."""
        if not self._residuals:
            return skips
        first = level * (self.spec.layers_per_block + 1)
        return [s + self._residuals[f"down_block_residual.{first + j}"]
                if f"down_block_residual.{first + j}" in self._residuals else s for j, s in enumerate(skips)]

    def _level(self, level: int, h: Tensor, emb: Tensor, context: Tensor | None,
               upsample_size: tuple[int, int] | None) -> Tensor:
        """The U-Net from resolution ``level`` down and back up: the level's down block, the
        levels below it (the ``deep`` branch point ``level``, or the middle block at the bottom),
        then the level's up block, which eats the level's skips and ``h`` itself (the last skip
        of the level above). ``h`` is ``[B, C, H_level, W_level]``; the output is upsampled to
        ``upsample_size`` (the level above's), or stays at this size at level 0."""
        skips = [h]
        h, block_skips = self._run(self.down_blocks[level], h, emb, context)
        skips += block_skips
        if level + 1 < len(self.down_blocks):
            skips.pop()  # the downsampled map h: the level below starts from it (and eats it as a skip)
            below = partial(self._level, level + 1, upsample_size=tuple(skips[-1].shape[-2:]))
            h = self.deep[level](below, h, emb, context)
        else:
            h = self._run(self.mid_block, h, emb, context)  # (B, C_last, H / 2**(levels-1), W / ...)
            if "mid_block_residual" in self._residuals:
                h = h + self._residuals["mid_block_residual"]
        up_block = self.up_blocks[len(self.up_blocks) - 1 - level]
        return self._run(up_block, h, self._with_residuals(level, skips), emb, context, upsample_size)

    def encode_down(self, h: Tensor, emb: Tensor, context: Tensor | None) -> tuple[list[Tensor], Tensor]:
        """The encoder half from ``conv_in``'s output ``h`` (plus what a side network adds to it):
        ``(skips, middle)``, the skips in diffusers' ``down_block_res_samples`` order (``h`` first,
        then every residual block's and downsampler's output) and the middle block's output. A
        ControlNet is a trained copy of this half (the ``controlnet`` plugin runs it)."""
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = self._run(block, h, emb, context)
            skips += block_skips
        return skips, self._run(self.mid_block, h, emb, context)

    def extra_conditioning(self, cond: sfumato.Conditioning, request: Any) -> sfumato.Conditioning:
        """SDXL-style models (``addition_embed_type = "text_time"``): the second text encoder's
        tokens and pooled ``text_embeds``, and the ``time_ids`` of the call's size
        (``sfumato.conditioners``; see ``text_time.py``). Other models add nothing."""
        if self.spec.addition_embed_type != "text_time":
            return cond
        return text_time_conditioning(self.spec, cond, request)

    def _run(self, block: nn.Module, *args):
        """Call a block, recomputing its activations in backward when gradient checkpointing is on."""
        if self.spec.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    # -- formats --------------------------------------------------------------------------------

    def foreign_module_names(self, format: str) -> dict[str, sfumato.AdapterTarget] | None:
        """The linear and convolution layers under diffusers' ``UNet2DConditionModel`` /
        ``UNet2DModel`` names, for adapters written for them (``format="diffusers"``; None for
        other formats). This U-Net's module names are diffusers' own (its checkpoints load without
        renaming), so each layer is named as it is here."""
        if format != "diffusers":
            return None
        return {name: sfumato.AdapterTarget(name) for name, module in self.named_modules()
                if isinstance(module, (nn.Linear, nn.Conv2d))}

    @classmethod
    def from_diffusers(cls, folder: str | Path, allow_pickle: bool = False) -> UNet:
        """Build from a diffusers component folder (``config.json`` +
        ``diffusion_pytorch_model.safetensors``), strictly loading its weights."""
        spec, state_dict = load_diffusers_folder(folder, allow_pickle=allow_pickle)
        return cls._from_state_dict(spec, state_dict, source=str(folder))

    def to_diffusers(self, folder: str | Path) -> Path:
        """Write a diffusers component folder that ``UNet2DModel`` / ``UNet2DConditionModel`` loads."""
        return save_diffusers_folder(self.spec, self.state_dict(), folder)

    @classmethod
    def from_ldm_checkpoint(
        cls, path: str | Path, spec: UNetSpec | None = None, allow_pickle: bool = False
    ) -> UNet:
        """Build from a Stable Diffusion 1.x single-file checkpoint (``model.diffusion_model.*``
        keys); ``spec`` defaults to the shipped ``sd15`` config. ``.ckpt`` files need ``allow_pickle``."""
        spec = spec or unet_config("sd15")
        state_dict = unet_state_dict_from_ldm(sfumato.load_weights(path, allow_pickle=allow_pickle), spec)
        return cls._from_state_dict(spec.model_copy(update={"weights": None}), state_dict, source=str(path))

    @classmethod
    def _from_state_dict(cls, spec: UNetSpec, state_dict: dict[str, Tensor], source: str) -> UNet:
        """Build without random initialisation (seconds for SD-size models; strict loading
        overwrites every tensor) and load ``state_dict``."""
        with torch.device("meta"):
            model = cls.from_spec(spec)
        return sfumato.load_into(model.to_empty(device="cpu"), state_dict, source=source)
