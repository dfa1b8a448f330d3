"""The convolutional pieces of the U-Net: residual blocks with time injection, down/up sampling."""

from __future__ import annotations

from torch import Tensor, nn


class ResnetBlock(nn.Module):
    """A pre-norm residual block whose middle receives the time embedding (DDPM,
    https://arxiv.org/abs/2006.11239, after Wide ResNets): ``x + conv(act(norm(conv(act(norm(x))) + emb)))``.

    :param in_channels: input channels; a 1x1 ``conv_shortcut`` matches them to ``out_channels``.
    :param embed_dim: width of the time (+ class) embedding, projected to a per-channel bias.
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, groups: int, eps: float, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(embed_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.act = nn.SiLU()
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.time_emb_proj(self.act(emb))[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return shortcut + h


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == 0:  # the original LDM convention: pad right and bottom only
            x = nn.functional.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution (nearest neighbour) then smooth with a 3x3 convolution.

    ``size`` overrides the factor of 2 so odd sizes on the way down come back exactly.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        if size is None:
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = nn.functional.interpolate(x, size=tuple(size), mode="nearest")
        return self.conv(x)
