"""Apply an image-to-image function tile by tile, blending the overlaps: how a large image is
encoded or decoded in bounded memory.

Each tile's output is weighted by a window that is 1 in the tile's interior and ramps linearly
across the overlap with its neighbours; the result is the weighted average of the tiles. Tiling
is an approximation: convolutions see less context at a tile's edge and the mid-block attention
sees only its tile, which the overlap and the blending hide.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor


def tile_starts(size: int, tile: int, overlap: int, step: int = 1) -> list[int]:
    """Offsets of the fewest ``tile``-pixel tiles that cover ``[0, size)`` with neighbours sharing
    at least ``overlap`` pixels, spread evenly; the first starts at 0 and the last ends at
    ``size``. Offsets are multiples of ``step`` (the downscale factor when encoding, so every
    tile maps to whole latent pixels), which may shrink an overlap by less than ``step``."""
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    return [(i * (size - tile)) // (count - 1) // step * step for i in range(count)]


def blend_window(length: int, ramp_start: int, ramp_end: int, device: torch.device) -> Tensor:
    """``[length]`` weights: linear ramps of ``ramp_start`` / ``ramp_end`` samples up from (and
    down to) near zero at the tile's edges, 1 elsewhere. Never exactly zero, so every output
    pixel has positive total weight."""
    weights = torch.ones(length, device=device)
    if ramp_start:
        weights[:ramp_start] = torch.arange(1, ramp_start + 1, device=device) / (ramp_start + 1)
    if ramp_end:
        weights[length - ramp_end:] = torch.arange(ramp_end, 0, -1, device=device) / (ramp_end + 1)
    return weights


def apply_tiled(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    tile: int,
    overlap: int,
    scale: float,
) -> Tensor:
    """``fn(x)`` computed on overlapping ``tile`` x ``tile`` crops of ``x`` and blended.

    :param fn: maps ``[B, C, h, w]`` to ``[B, C', h * scale, w * scale]``.
    :param tile: tile size in input pixels.
    :param overlap: input pixels shared by neighbouring tiles (``< tile``).
    :param scale: output size per input pixel (the downscale factor to decode, its inverse to
        encode); ``tile * scale`` and ``size * scale`` must be whole numbers.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile={tile}), got {overlap}")
    height, width = x.shape[-2:]
    step = max(1, round(1 / scale))  # tiles must start on whole output pixels
    rows, cols = (tile_starts(size, tile, overlap, step) for size in (height, width))
    out = weight_sum = None
    for i, top in enumerate(rows):
        for j, left in enumerate(cols):
            y = fn(x[..., top:top + tile, left:left + tile])  # (B, C', tile * scale, tile * scale)
            if out is None:
                shape = (*y.shape[:2], round(height * scale), round(width * scale))
                out, weight_sum = y.new_zeros(shape), y.new_zeros(shape[-2:])
            # Ramp each side over exactly the pixels shared with the neighbour on that side.
            window = torch.outer(
                blend_window(y.shape[-2], *_shared(rows, i, tile, scale), y.device),
                blend_window(y.shape[-1], *_shared(cols, j, tile, scale), y.device),
            ).to(y.dtype)  # (tile * scale, tile * scale)
            oy, ox = round(top * scale), round(left * scale)
            out[..., oy:oy + y.shape[-2], ox:ox + y.shape[-1]] += y * window
            weight_sum[oy:oy + y.shape[-2], ox:ox + y.shape[-1]] += window
    return out / weight_sum


def _shared(starts: list[int], i: int, tile: int, scale: float) -> tuple[int, int]:
    """Output pixels tile ``i`` shares with its previous and its next neighbour."""
    before = starts[i - 1] + tile - starts[i] if i > 0 else 0
    after = starts[i] + tile - starts[i + 1] if i + 1 < len(starts) else 0
    return round(before * scale), round(after * scale)
