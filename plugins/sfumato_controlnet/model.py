"""The ControlNet network (Zhang et al. 2023, https://arxiv.org/abs/2302.05543), as diffusers'
``ControlNetModel``: a trained copy of a U-Net's encoder half whose input also receives an
embedded control image, and whose every skip and middle output pass a zero-initialised 1x1
convolution to become residuals for the U-Net.

    control image [B, 3, H, W] in [0, 1] --controlnet_cond_embedding--> [B, C0, h, w]
    x_t --conv_in--> + embedded image --> down blocks --> mid block      (the U-Net's own blocks)
    each skip i --controlnet_down_blocks.i (1x1)--> down_block_residual.i  x scale
    middle     --controlnet_mid_block (1x1)-----> mid_block_residual       x scale

The encoder half is the ``[denoiser]`` type ``unet`` built through the registry (the public
``sfumato.build``) from the ControlNet's own config, without its up path: parameter names are
diffusers' (``down_blocks.0.resnets.0.conv1.weight``), so a diffusers ``ControlNetModel`` folder
loads without renaming.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import sfumato

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
#: diffusers ControlNetModel options with the only value this network reproduces.
UNSUPPORTED_OPTIONS: dict[str, Any] = {
    "act_fn": "silu", "class_embed_type": None, "num_class_embeds": None, "resnet_time_scale_shift": "default",
    "only_cross_attention": False, "upcast_attention": False, "encoder_hid_dim": None, "global_pool_conditions": False,
    "controlnet_conditioning_channel_order": "rgb", "mid_block_type": "UNetMidBlock2DCrossAttn",
    "conditioning_channels": 3,
}


def read_config(folder: Path) -> dict[str, Any]:
    """A diffusers ControlNetModel folder's ``config.json``; anything this network cannot
    reproduce is a ``SpecError`` naming the option."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise sfumato.WeightsError(f"{folder}: not a diffusers ControlNetModel folder (no {CONFIG_NAME})")
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("_class_name", "ControlNetModel") != "ControlNetModel":
        raise sfumato.SpecError(f"_class_name is {config['_class_name']!r}; expected 'ControlNetModel'", source=str(path))
    problems = [f"diffusers option {name}={config[name]!r} is not supported (only {accepted!r})"
                for name, accepted in UNSUPPORTED_OPTIONS.items() if config.get(name, accepted) != accepted]
    blocks = config.get("down_block_types", ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"])
    if any(b not in ("CrossAttnDownBlock2D", "DownBlock2D") for b in blocks):
        problems.append(f"down_block_types {blocks}: only CrossAttnDownBlock2D and DownBlock2D are supported")
    if problems:
        raise sfumato.SpecError(problems, source=str(path))
    return config


def unet_table(config: dict[str, Any]) -> dict[str, Any]:
    """The ``unet`` denoiser table of the encoder half a ControlNet config describes."""
    down = config.get("down_block_types", ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"])
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    layers = config.get("transformer_layers_per_block", 1)
    table: dict[str, Any] = {
        "type": "unet",
        "in_channels": config.get("in_channels", 4), "out_channels": config.get("in_channels", 4),
        "block_out_channels": list(config.get("block_out_channels", [320, 640, 1280, 1280])),
        "layers_per_block": config.get("layers_per_block", 2),
        "attention": [block == "CrossAttnDownBlock2D" for block in down], "mid_attention": True,
        "attention_heads": list(heads) if isinstance(heads, (list, tuple)) else heads,
        "cross_attention_dim": config.get("cross_attention_dim", 1280),
        "transformer_layers": list(layers) if isinstance(layers, (list, tuple)) else layers,
        "linear_projection": bool(config.get("use_linear_projection", False)),
        "norm_num_groups": config.get("norm_num_groups", 32), "norm_eps": config.get("norm_eps", 1e-5),
        "flip_sin_to_cos": config.get("flip_sin_to_cos", True), "freq_shift": config.get("freq_shift", 0),
        "downsample_padding": config.get("downsample_padding", 1),
    }
    if config.get("addition_embed_type") == "text_time":  # an SDXL ControlNet
        table.update(addition_embed_type="text_time", addition_time_embed_dim=config["addition_time_embed_dim"],
                     projection_class_embeddings_input_dim=config["projection_class_embeddings_input_dim"])
    elif config.get("addition_embed_type") is not None:
        raise sfumato.SpecError(f"addition_embed_type {config['addition_embed_type']!r} is not supported")
    return table


class ConditioningEmbedding(nn.Module):
    """The control image to the U-Net's first feature width and latent resolution: a 3x3 conv,
    then pairs of 3x3 convs (the second of each with stride 2), SiLU between, and a zero-initialised
    3x3 conv out. ``[B, 3, H, W] -> [B, C0, H / 2**(n-1), W / 2**(n-1)]``."""

    def __init__(self, out_channels: int, channels: list[int], in_channels: int = 3):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            self.blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(channels[-1], out_channels, 3, padding=1)

    def forward(self, image: Tensor) -> Tensor:
        h = nn.functional.silu(self.conv_in(image))
        for block in self.blocks:
            h = nn.functional.silu(block(h))
        return self.conv_out(h)


class ControlNetwork(nn.Module):
    """``(x, t, cond, image) -> residuals``: the U-Net extras (``down_block_residual.<i>``,
    ``mid_block_residual``) this ControlNet adds for one forward, not yet scaled."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        encoder = sfumato.build("denoiser", {**unet_table(config), "weights": None})
        encoder.up_blocks = nn.ModuleList()  # the up path is not part of a ControlNet
        self.__dict__["encoder"] = encoder  # runs the blocks below; not a sub-module (no up path, no conv_out)
        self.time_embedding, self.conv_in = encoder.time_embedding, encoder.conv_in
        if hasattr(encoder, "add_embedding"):
            self.add_embedding = encoder.add_embedding
        self.down_blocks, self.mid_block = encoder.down_blocks, encoder.mid_block
        channels = list(config.get("block_out_channels", [320, 640, 1280, 1280]))
        self.controlnet_cond_embedding = ConditioningEmbedding(
            channels[0], list(config.get("conditioning_embedding_out_channels", [16, 32, 96, 256])))
        per_level = config.get("layers_per_block", 2)
        zero = [channels[0]]
        for level, width in enumerate(channels):
            zero += [width] * (per_level + (level < len(channels) - 1))
        self.controlnet_down_blocks = nn.ModuleList(nn.Conv2d(c, c, 1) for c in zero)
        self.controlnet_mid_block = nn.Conv2d(channels[-1], channels[-1], 1)

    def forward(self, x: Tensor, t: Tensor, cond: sfumato.Conditioning, image: Tensor) -> dict[str, Tensor]:
        """:param x: the U-Net's input ``[B, C, h, w]``. :param t: ``[B]`` timesteps.
        :param image: ``[B, 3, H, W]`` in [0, 1] at the pixel size of ``x``."""
        encoder = self.encoder
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        emb = encoder.embed(t, None, x.dtype, cond.extras)  # (B, 4 * C0)
        context = cond.tokens.to(x.dtype) if cond.tokens is not None else None
        h = self.conv_in(x) + self.controlnet_cond_embedding(image.to(x.dtype))  # (B, C0, h, w)
        skips, middle = encoder.encode_down(h, emb, context)
        residuals = {f"down_block_residual.{i}": conv(skip)
                     for i, (conv, skip) in enumerate(zip(self.controlnet_down_blocks, skips))}
        residuals["mid_block_residual"] = self.controlnet_mid_block(middle)
        return residuals
