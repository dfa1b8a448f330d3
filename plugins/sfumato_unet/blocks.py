"""The U-Net's stages: a down block per resolution level, the middle block, an up block per level.

Each block is a list of residual blocks (``sfumato.nn.ResnetBlock``, with the time embedding), each
optionally followed by an attention block, then a resampler (``sfumato.nn.Downsample`` /
``Upsample``). Attribute names (``resnets``, ``attentions``, ``downsamplers``, ``upsamplers``)
follow the diffusers layout, so diffusers checkpoints load without renaming.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

import sfumato

#: Builds one attention block for a level (a ``SpatialSelfAttention`` or ``SpatialTransformer``).
AttentionFactory = Callable[[], nn.Module]


def _attentions(factory: AttentionFactory | None, n: int) -> nn.ModuleList:
    return nn.ModuleList([factory() for _ in range(n)] if factory is not None else [])


def _resnet_then_attention(resnet: nn.Module, attentions: nn.ModuleList, i: int, h: Tensor, emb: Tensor,
                           context: Tensor | None) -> Tensor:
    h = resnet(h, emb)
    return attentions[i](h, context) if len(attentions) else h


class DownBlock(nn.Module):
    """``layers`` residual(+attention) blocks at one resolution, then a stride-2 downsample.

    Returns the output and every intermediate feature map, which the up path concatenates back
    (the U-Net skip connections, https://arxiv.org/abs/1505.04597).
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, layers: int, groups: int, eps: float,
                 dropout: float, attention: AttentionFactory | None, downsample: bool, downsample_padding: int):
        super().__init__()
        self.resnets = nn.ModuleList([
            sfumato.nn.ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups=groups, eps=eps,
                                   dropout=dropout, embed_dim=embed_dim)
            for i in range(layers)
        ])
        self.attentions = _attentions(attention, layers)
        self.downsamplers = nn.ModuleList([sfumato.nn.Downsample(out_channels, downsample_padding)] if downsample else [])

    def forward(self, h: Tensor, emb: Tensor, context: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            h = _resnet_then_attention(resnet, self.attentions, i, h, emb, context)
            skips.append(h)
        for downsampler in self.downsamplers:
            h = downsampler(h)  # (B, C, H, W) -> (B, C, H/2, W/2)
            skips.append(h)
        return h, skips


class MidBlock(nn.Module):
    """Residual block, attention, residual block at the lowest resolution."""

    def __init__(self, channels: int, embed_dim: int, groups: int, eps: float, dropout: float,
                 attention: AttentionFactory | None):
        super().__init__()
        self.resnets = nn.ModuleList([
            sfumato.nn.ResnetBlock(channels, channels, groups=groups, eps=eps, dropout=dropout, embed_dim=embed_dim)
            for _ in range(2)
        ])
        self.attentions = _attentions(attention, 1)

    def forward(self, h: Tensor, emb: Tensor, context: Tensor | None) -> Tensor:
        h = _resnet_then_attention(self.resnets[0], self.attentions, 0, h, emb, context)
        return self.resnets[1](h, emb)


class UpBlock(nn.Module):
    """``layers`` residual(+attention) blocks, each eating one skip connection, then an upsample.

    :param in_channels: channels of the skip coming from the block below this level's first skip
        (the last skip this block consumes).
    :param prev_channels: channels arriving from the previous (lower-resolution) up block.
    """

    def __init__(self, in_channels: int, prev_channels: int, out_channels: int, embed_dim: int, layers: int,
                 groups: int, eps: float, dropout: float, attention: AttentionFactory | None, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([
            sfumato.nn.ResnetBlock(
                (prev_channels if i == 0 else out_channels) + (in_channels if i == layers - 1 else out_channels),
                out_channels, groups=groups, eps=eps, dropout=dropout, embed_dim=embed_dim,
            )
            for i in range(layers)
        ])
        self.attentions = _attentions(attention, layers)
        self.upsamplers = nn.ModuleList([sfumato.nn.Upsample(out_channels)] if upsample else [])

    def forward(self, h: Tensor, skips: list[Tensor], emb: Tensor, context: Tensor | None,
                upsample_size: tuple[int, int] | None = None) -> Tensor:
        """:param skips: this block's skip connections in the order they were made (one per resnet)."""
        for i, resnet in enumerate(self.resnets):
            h = torch.cat([h, skips[-1 - i]], dim=1)  # (B, C + C_skip, H, W)
            h = _resnet_then_attention(resnet, self.attentions, i, h, emb, context)
        for upsampler in self.upsamplers:
            h = upsampler(h, upsample_size)  # (B, C, H, W) -> (B, C, 2H, 2W)
        return h


class DeepBranch(sfumato.PatchPoint, nn.Module):
    """The U-Net below one resolution level, as a ``deep-branch`` perturbation point: no weights
    of its own (the blocks it runs stay where they are, so state-dict keys are unchanged), only a
    name (``deep.0``) where a model patch may replace the branch for some rows of a forward.
    DeepCache (Ma et al. 2023, https://arxiv.org/abs/2312.00858) reuses its output across steps."""

    point_kind = sfumato.model_patches.DEEP_BRANCH

    def __init__(self, level: int):
        super().__init__()
        self.level = level  # the first level the branch runs

    def forward(self, run: Callable[..., Tensor], h: Tensor, emb: Tensor, context: Tensor | None) -> Tensor:
        """``run(h, emb, context)``, the branch (the U-Net's ``_level``), or a patch instead.
        :param h: ``[B, C, H, W]`` the feature map entering ``level``. :returns: the output of the
        up block of ``level``, upsampled to the level above."""
        return self.run_block(run, h, emb, context)
