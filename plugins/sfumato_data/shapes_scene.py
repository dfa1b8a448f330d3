"""Sampling and drawing ``shapes`` scenes: which objects, where, and the pixels.

A scene is one of four kinds, each aimed at a GenEval-style skill:

- ``single``: one object placed in a named region (object, colour, size, position);
- ``pair``: two objects of different shapes and colours with a clear spatial relation
  (two objects, colour attribution, position);
- ``count``: two or more objects of the same shape and colour (counting);
- ``mixed``: three or more objects of any shape and colour (composition).

Objects never overlap and keep a gap between them, so the detector can separate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from .shapes_vocab import COLORS, REGIONS, RELATIONS, SHAPES, SIZES, region_of, spatial_relations

SceneKind = Literal["single", "pair", "count", "mixed"]
SCENE_KINDS: tuple[str, ...] = ("single", "pair", "count", "mixed")

#: Empty space kept between objects and around the image border (fraction of the image side).
GAP = 0.05
_MAX_TRIES = 200


@dataclass
class ShapeObject:
    """One drawn object: its shape, colour and size names, its side and centre (normalised)."""

    shape: str
    color: str
    size: str
    side: float
    center: tuple[float, float]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``, normalised."""
        half = self.side / 2
        return (self.center[0] - half, self.center[1] - half, self.center[0] + half, self.center[1] + half)

    def to_attributes(self) -> dict:
        return {
            "shape": self.shape,
            "color": self.color,
            "size": self.size,
            "center": [round(c, 4) for c in self.center],
            "bbox": [round(c, 4) for c in self.bbox],
            "region": region_of(self.center),
        }


@dataclass
class Scene:
    """The objects of one image, the kind of scene, and (for pairs) the relation it was built for."""

    kind: str
    objects: list[ShapeObject]
    relation: str | None = None
    region: str | None = None

    def relations(self) -> list[tuple[int, str, int]]:
        """Every ``(i, relation, j)`` with ``i < j`` that holds between object centres."""
        return [
            (i, relation, j)
            for i, a in enumerate(self.objects)
            for j, b in enumerate(self.objects)
            if i < j
            for relation in spatial_relations(a.center, b.center)
        ]


def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _side(rng: np.random.Generator, size: str) -> float:
    low, high = SIZES[size]
    return float(rng.uniform(low, high))


def _span(side: float) -> tuple[float, float]:
    """The range a centre may take so an object of ``side`` stays inside the border gap."""
    return side / 2 + GAP, 1 - side / 2 - GAP


def _apart(a: ShapeObject, b: ShapeObject) -> bool:
    """True when the boxes of ``a`` and ``b`` are separated by at least ``GAP`` along some axis."""
    reach = (a.side + b.side) / 2 + GAP
    return abs(a.center[0] - b.center[0]) >= reach or abs(a.center[1] - b.center[1]) >= reach


def _place(rng: np.random.Generator, specs: list[tuple[str, str, str]]) -> list[ShapeObject]:
    """Place objects ``(shape, color, size)`` at random without overlap; retries, and shrinks
    every object to ``small`` if the large ones do not fit."""
    for attempt in range(2):
        sides = [_side(rng, size) for _, _, size in specs]
        placed: list[ShapeObject] = []
        for (shape, color, size), side in zip(specs, sides):
            low, high = _span(side)
            for _ in range(_MAX_TRIES):
                obj = ShapeObject(shape, color, size, side, (float(rng.uniform(low, high)), float(rng.uniform(low, high))))
                if all(_apart(obj, other) for other in placed):
                    placed.append(obj)
                    break
            else:
                break
        if len(placed) == len(specs):
            return placed
        specs = [(shape, color, "small") for shape, color, _ in specs]
    raise RuntimeError(f"could not place {len(specs)} small objects without overlap")


def _single(rng: np.random.Generator) -> Scene:
    size = _pick(rng, SIZES)
    obj = ShapeObject(_pick(rng, SHAPES), _pick(rng, COLORS), size, _side(rng, size), (0.5, 0.5))
    region = _pick(rng, REGIONS)
    low, high = _span(obj.side)
    near, far = (low, min(0.3, high)), (max(0.7, low), high)
    across = (0.38, 0.62)
    ranges = {
        "left": (near, across), "right": (far, across), "top": (across, near),
        "bottom": (across, far), "center": ((0.42, 0.58), (0.42, 0.58)),
    }[region]
    obj.center = tuple(float(rng.uniform(*r)) for r in ranges)
    return Scene("single", [obj], region=region)


def _pair(rng: np.random.Generator) -> Scene:
    """Two objects, different shapes and colours, the first ``relation`` the second."""
    shapes = rng.permutation(len(SHAPES))[:2]
    colors = rng.permutation(len(COLORS))[:2]
    names = list(COLORS)
    relation = _pick(rng, RELATIONS)
    objects = []
    for k in range(2):
        size = _pick(rng, SIZES)
        objects.append(ShapeObject(SHAPES[shapes[k]], names[colors[k]], size, _side(rng, size), (0.5, 0.5)))
    a, b = objects
    horizontal = relation in ("left of", "right of")
    reach = (a.side + b.side) / 2 + GAP
    for _ in range(_MAX_TRIES):
        main_a, main_b = (rng.uniform(*_span(o.side)) for o in (a, b))
        if abs(main_a - main_b) < max(reach, 0.25):
            continue
        # Keep the other axis close so the intended relation is the dominant one.
        cross = rng.uniform(0.3, 0.7)
        offset = rng.uniform(-1, 1) * abs(main_a - main_b) / 3
        cross_a, cross_b = cross - offset / 2, cross + offset / 2
        first, second = sorted((float(main_a), float(main_b)))
        if relation in ("right of", "below"):
            first, second = second, first
        a.center = (first, float(cross_a)) if horizontal else (float(cross_a), first)
        b.center = (second, float(cross_b)) if horizontal else (float(cross_b), second)
        break
    return Scene("pair", objects, relation=relation)


def sample_scene(rng: np.random.Generator, kinds: list[str], max_objects: int) -> Scene:
    """Draw one scene of a kind chosen uniformly from ``kinds``, using only ``rng``."""
    kind = _pick(rng, kinds)
    if kind == "single":
        return _single(rng)
    if kind == "pair":
        return _pair(rng)
    if kind == "count":
        count = int(rng.integers(2, max_objects + 1))
        shape, color = _pick(rng, SHAPES), _pick(rng, COLORS)
        specs = [(shape, color, _pick(rng, SIZES)) for _ in range(count)]
        return Scene("count", _place(rng, specs))
    count = int(rng.integers(3, max_objects + 1))
    specs = [(_pick(rng, SHAPES), _pick(rng, COLORS), _pick(rng, SIZES)) for _ in range(count)]
    return Scene("mixed", _place(rng, specs))


def render_scene(
    scene: Scene, resolution: int, supersample: int = 4, background: tuple[int, int, int] = (235, 235, 235)
) -> Image.Image:
    """Draw ``scene`` at ``resolution * supersample`` and box-filter it down to ``resolution``:
    each output pixel is the exact average of its sub-pixels, which anti-aliases the edges."""
    canvas = resolution * supersample
    image = Image.new("RGB", (canvas, canvas), tuple(background))
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x0, y0, x1, y1 = (v * canvas for v in obj.bbox)
        color = COLORS[obj.color]
        if obj.shape == "square":
            draw.rectangle((round(x0), round(y0), round(x1) - 1, round(y1) - 1), fill=color)
        elif obj.shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=color)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=color)
    if supersample == 1:
        return image
    return image.resize((resolution, resolution), Image.Resampling.BOX)
