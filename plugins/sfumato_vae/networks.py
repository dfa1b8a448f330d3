"""The two halves of the KL autoencoder: the encoder (image -> Gaussian moments) and the decoder
(latents -> image). See ``layers.py`` for the blocks and the papers; the resamplers are
``sfumato.nn.Downsample`` (padded right and bottom, as the checkpoints were trained) and
``sfumato.nn.Upsample``."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

import sfumato

from .layers import NORM_EPS, MidBlock, ResnetBlock, group_norm


class Architecture(NamedTuple):
    """What the encoder and the decoder share: the widths per stage (highest resolution first),
    ResNet blocks per encoder stage, GroupNorm groups and whether the mid blocks attend."""

    block_out_channels: list[int]
    layers_per_block: int
    groups: int
    mid_attention: bool


class Stage(nn.Module):
    """``layers`` ResNet blocks at one resolution, then ``resample`` (a 2x down- or upsampling,
    or nothing for the stage at the bottleneck's resolution)."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, resample: nn.Module):
        super().__init__()
        widths = [in_channels] + [out_channels] * layers
        self.resnets = nn.ModuleList(
            ResnetBlock(a, b, groups=groups, eps=NORM_EPS) for a, b in zip(widths[:-1], widths[1:])
        )
        self.resample = resample

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return self.resample(x)


class Encoder(nn.Module):
    """``[B, in_channels, H, W] -> [B, out_channels, H / 2^(S-1), W / 2^(S-1)]`` for S stages.

    Every stage but the last halves the resolution; the widths are ``block_out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, arch: Architecture):
        super().__init__()
        widths, groups, last = arch.block_out_channels, arch.groups, len(arch.block_out_channels) - 1
        widths_in = [widths[0], *widths[:-1]]
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList(
            Stage(widths_in[i], widths[i], arch.layers_per_block, groups,
                  sfumato.nn.Downsample(widths[i], padding=0) if i < last else nn.Identity())
            for i in range(len(widths))
        )
        self.mid = MidBlock(widths[-1], groups, attention=arch.mid_attention)
        self.norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """``[B, in_channels, h, w] -> [B, out_channels, h * 2^(S-1), w * 2^(S-1)]``: the mirror of
    ``Encoder``, widest stage first, with one more ResNet block per stage than the encoder."""

    def __init__(self, in_channels: int, out_channels: int, arch: Architecture):
        super().__init__()
        widths, groups, last = arch.block_out_channels[::-1], arch.groups, len(arch.block_out_channels) - 1
        widths_in = [widths[0], *widths[:-1]]
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.mid = MidBlock(widths[0], groups, attention=arch.mid_attention)
        self.up = nn.ModuleList(
            Stage(widths_in[i], widths[i], arch.layers_per_block + 1, groups,
                  sfumato.nn.Upsample(widths[i]) if i < last else nn.Identity())
            for i in range(len(widths))
        )
        self.norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for stage in self.up:
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))
