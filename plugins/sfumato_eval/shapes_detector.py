"""A rule-based detector for clean ``shapes`` images: the objects, their colours, shapes, sizes
and boxes, recovered without a learned model. It is the judge of the GenEval-style score; the
palette, fill ratios, sizes and regions are the ``shapes`` dataset's own (``shapes_vocabulary``).

How it works, per image:

1. the background is the median colour of the border pixels;
2. pixels far from it are foreground; 8-connected foreground regions are objects;
3. an object's colour is the palette colour nearest to its most saturated pixels (its interior,
   free of the anti-aliased edge);
4. each pixel's coverage ``alpha`` is its projection onto the line from the background to that
   colour, so edge pixels count fractionally; the object's width (height) is the largest row
   (column) sum of ``alpha`` and its area the sum of all ``alpha``;
5. mass skewed towards the bottom (the skewness of the row sums) makes a triangle; otherwise
   the fill ratio ``area / (width * height)`` names the shape: 1.0 square, pi/4 circle
   (``FILL_RATIOS``); the larger side names the size.

It needs a plain background and images of 48 pixels or more (at 32 pixels about one scene in
200 is misread: small objects blur into their neighbours); touching objects merge into one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from .datasets import shapes_vocabulary

#: Distance (0..255 RGB units) from the background above which a pixel is foreground.
FOREGROUND_DISTANCE = 40.0

#: Vertical skewness below which an object is a triangle (halfway between -0.57 and 0).
TRIANGLE_SKEW = -0.28

def _as_rgb(image: torch.Tensor | Image.Image | np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float64 in 0..255 from a ``[3, H, W]`` tensor in [-1, 1], a PIL image or a
    ``(H, W, 3)`` uint8 array."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"detect_shapes expects one [3, H, W] image, got shape {tuple(image.shape)}")
        return image.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).permute(1, 2, 0).double().numpy()
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    return np.asarray(image, dtype=np.float64)


def _vertical_skew(rows: np.ndarray) -> float:
    """Skewness of the object's mass along y (``rows`` are its row sums). An apex-up triangle's
    mass grows linearly towards its base, skewness -0.57; circles and squares are symmetric, 0.
    Unlike the fill ratio it needs no box, so it holds for objects of a few pixels."""
    y = np.arange(rows.shape[0], dtype=np.float64)
    weights = rows / rows.sum()
    mean = (weights * y).sum()
    var = (weights * (y - mean) ** 2).sum()
    return float((weights * (y - mean) ** 3).sum() / var**1.5) if var > 0 else 0.0


def _shape_from_fill(fill: float, skew: float, fill_ratios: dict[str, float]) -> str:
    """Triangle when the mass is skewed towards the base; else the shape whose fill ratio is
    nearest to ``fill`` (square 1.0, circle pi/4)."""
    if skew < TRIANGLE_SKEW:
        return "triangle"
    return min(("circle", "square"), key=lambda shape: abs(fill_ratios[shape] - fill))


def detect_shapes(
    image: torch.Tensor | Image.Image | np.ndarray, min_pixels: int = 6
) -> list[dict[str, Any]]:
    """Find the objects of a clean shapes image.

    :param image: a ``[3, H, W]`` tensor in [-1, 1], a PIL image or an ``(H, W, 3)`` uint8 array.
    :param min_pixels: smaller foreground regions are noise and skipped.
    :returns: one dict per object, sorted left to right: ``shape``, ``color``, ``size``,
        ``center`` and ``bbox`` (normalised, y down, as in the dataset's attributes),
        ``region``, ``fill`` (the measured fill ratio) and ``pixels`` (its area in pixels).
    """
    from scipy import ndimage  # scipy comes with scikit-learn

    vocabulary = shapes_vocabulary()
    palette_names = list(vocabulary.COLORS)
    palette = np.array([vocabulary.COLORS[name] for name in palette_names], dtype=np.float64)  # (K, 3)
    rgb = _as_rgb(image)
    height, width = rgb.shape[:2]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    offset = rgb - background  # (H, W, 3)
    distance = np.linalg.norm(offset, axis=-1)
    labels, count = ndimage.label(distance > FOREGROUND_DISTANCE, structure=np.ones((3, 3)))
    objects = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        member = labels == label
        if member.sum() < min_pixels:
            continue
        near = distance[member]
        interior = rgb[member][near >= 0.9 * near.max()].mean(axis=0)
        color_index = int(np.argmin(np.linalg.norm(palette - interior, axis=1)))
        direction = palette[color_index] - background
        # Coverage of each pixel of the object and the ring around it (the faint edge pixels).
        ring = ndimage.binary_dilation(member, structure=np.ones((3, 3))) & ~(labels > 0) | member
        alpha = np.clip(offset @ direction / (direction @ direction), 0.0, 1.0) * ring
        area = alpha.sum()
        object_width, object_height = alpha.sum(axis=1).max(), alpha.sum(axis=0).max()
        fill = float(area / (object_width * object_height))
        skew = _vertical_skew(alpha.sum(axis=1))
        rows, cols = box
        bbox = (cols.start / width, rows.start / height, cols.stop / width, rows.stop / height)
        center = ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
        objects.append({
            "shape": _shape_from_fill(fill, skew, vocabulary.FILL_RATIOS),
            "color": palette_names[color_index],
            "size": vocabulary.size_name(max(object_width / width, object_height / height)),
            "center": [round(c, 4) for c in center],
            "bbox": [round(c, 4) for c in bbox],
            "region": vocabulary.region_of(center),
            "fill": round(fill, 3),
            "skew": round(skew, 3),
            "pixels": float(area),
        })
    return sorted(objects, key=lambda obj: obj["center"][0])
