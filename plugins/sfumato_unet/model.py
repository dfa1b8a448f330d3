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
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

import sfumato

from .attention import SpatialSelfAttention
from .blocks import AttentionFactory, DownBlock, MidBlock, UpBlock
from .checkpoints import read_unet_weights
from .diffusers_format import load_diffusers_folder, save_diffusers_folder
from .ldm import unet_state_dict_from_ldm
from .spec import UNetSpec, unet_config
from .transformer import SpatialTransformer


class UNet(sfumato.Denoiser):
    """A configurable U-Net: ``forward(x [B, C, H, W], t [B], cond) -> [B, out_channels, H, W]``.

    Conditioning: ``cond.tokens`` ``[B, L, cross_attention_dim]`` for cross-attention models (the
    mask is not used: SD-style models attend to every token, as they were trained);
    ``cond.labels`` ``[B]`` for class-conditional ones (label ``num_classes`` is the null class
    when ``null_class`` is set, and is used when no labels are given).
    """

    Spec: ClassVar[type[UNetSpec]] = UNetSpec

    def __init__(self, spec: UNetSpec):
        super().__init__()
        self.spec = spec
        self.in_channels, self.out_channels = spec.in_channels, spec.out_channels
        channels = spec.block_out_channels
        levels = len(channels)
        embed_dim = channels[0] * 4
        resnet = dict(embed_dim=embed_dim, groups=spec.norm_num_groups, eps=spec.norm_eps, dropout=spec.dropout)

        self.time_embedding = sfumato.nn.TimestepEmbedding(channels[0], embed_dim)
        self.class_embedding = nn.Embedding(spec.num_class_embeds, embed_dim) if spec.num_classes else None
        self.num_classes = spec.num_classes
        self.null_label = spec.num_classes if spec.num_classes and spec.null_class else None
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
            layers=spec.transformer_layers, dropout=spec.dropout, linear_projection=spec.linear_projection,
        )

    def embed(self, t: Tensor, labels: Tensor | None, dtype: torch.dtype) -> Tensor:
        """The vector each residual block receives: time MLP(sinusoid(t)) (+ class embedding). ``[B, 4 * C0]``."""
        spec = self.spec
        emb = self.time_embedding(
            sfumato.nn.timestep_embedding(t, spec.block_out_channels[0], spec.flip_sin_to_cos, spec.freq_shift).to(dtype)
        )
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
        emb = self.embed(t, cond.labels if cond is not None else None, x.dtype)  # (B, 4 * C0)

        h = self.conv_in(x)  # (B, C0, H, W)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = self._run(block, h, emb, context)
            skips += block_skips
        h = self._run(self.mid_block, h, emb, context)  # (B, C_last, H / 2**(levels-1), W / ...)
        for block in self.up_blocks:
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            upsample_size = tuple(skips[-1].shape[-2:]) if skips else None
            h = self._run(block, h, block_skips, emb, context, upsample_size)
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))  # (B, out_channels, H, W)

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
