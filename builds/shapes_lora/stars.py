"""Procedural stars in the style of the ``shapes`` dataset: a five-pointed star, a shape the
built-in ``shapes`` model has never seen, drawn as ``sfumato_data`` draws its circles, squares
and triangles (palette, sizes, regions, gaps, 4x supersampling and a box filter), with captions
from the same templates ("a small red star on the left", "two blue stars").

Scenes are seeded by ``(seed, index)`` alone, as the dataset's are.
"""

from __future__ import annotations

import math

import numpy as np
import sfumato
from PIL import Image, ImageDraw

#: The dataset's vocabulary (palette, sizes, regions, caption wording), through the registry.
VOCABULARY = sfumato.get_registry().get("dataset", "shapes").vocabulary
NEW_SHAPE = "star"
#: Lumps that are no shape of the dataset: what the evaluation's judge calls "other".
BLOB = "other"
#: Inner radius of the star as a fraction of its outer radius (a regular pentagram is 0.38;
#: fatter points survive the 4x-downscaling autoencoder of the shapes model better).
INNER_RATIO = 0.5
GAP = 0.05


def star_points(center: tuple[float, float], side: float, canvas: int) -> list[tuple[float, float]]:
    """The 10 vertices of an apex-up star filling a ``side`` x ``side`` box around ``center``
    (normalised), in canvas pixels: width ``2 R sin 72``, height ``R (1 + cos 36)``."""
    radius = side / (2 * math.sin(math.radians(72)))
    height = radius * (1 + math.cos(math.radians(36)))
    cx, cy = center[0], center[1] - side / 2 + radius + (side - height) / 2  # the box's centre is the star's
    points = []
    for k in range(10):
        angle = math.pi / 2 + k * math.pi / 5
        r = radius if k % 2 == 0 else radius * INNER_RATIO
        points.append(((cx + r * math.cos(angle)) * canvas, (cy - r * math.sin(angle)) * canvas))
    return points


def blob_points(center: tuple[float, float], side: float, canvas: int, index: int = 0) -> list[tuple[float, float]]:
    """A lumpy convex-ish polygon (5 to 9 vertices, radii 0.6 to 1 of the box) seeded by its
    place: what a model draws when it draws no clean shape. The judge's "other" class."""
    rng = np.random.default_rng([int(center[0] * 1e6), int(center[1] * 1e6), index])
    count = int(rng.integers(5, 10))
    angles = (np.arange(count) + rng.uniform(-0.3, 0.3, count)) * 2 * np.pi / count + rng.uniform(0, 2 * np.pi)
    radii = side / 2 * rng.uniform(0.6, 1.0, count)
    squash = rng.uniform(0.6, 1.0)
    return [((center[0] + r * np.cos(a)) * canvas, (center[1] + squash * r * np.sin(a)) * canvas)
            for r, a in zip(radii, angles)]


def draw(objects: list[tuple[str, str, float, tuple[float, float]]], resolution: int = 64, supersample: int = 4,
         background: tuple[int, int, int] = (235, 235, 235)) -> Image.Image:
    """Draw ``(shape, colour, side, centre)`` objects, stars included, as ``render_scene`` does."""
    canvas = resolution * supersample
    image = Image.new("RGB", (canvas, canvas), background)
    pen = ImageDraw.Draw(image)
    for shape, color, side, (x, y) in objects:
        fill = VOCABULARY.COLORS[color]
        x0, y0, x1, y1 = ((x - side / 2) * canvas, (y - side / 2) * canvas, (x + side / 2) * canvas,
                          (y + side / 2) * canvas)
        if shape == NEW_SHAPE:
            pen.polygon(star_points((x, y), side, canvas), fill=fill)
        elif shape == BLOB:
            pen.polygon(blob_points((x, y), side, canvas), fill=fill)
        elif shape == "square":
            pen.rectangle((round(x0), round(y0), round(x1) - 1, round(y1) - 1), fill=fill)
        elif shape == "circle":
            pen.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:
            pen.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return image.resize((resolution, resolution), Image.Resampling.BOX)


def _side(rng: np.random.Generator, size: str) -> float:
    return float(rng.uniform(*VOCABULARY.SIZES[size]))


def single(rng: np.random.Generator, shape: str = NEW_SHAPE):
    """One object in a named region, and its captions (most specific first), as ``shapes`` writes them."""
    color, size, region = (str(rng.choice(list(options))) for options in (VOCABULARY.COLORS, VOCABULARY.SIZES,
                                                                           VOCABULARY.REGIONS))
    side = _side(rng, size)
    low, high = side / 2 + GAP, 1 - side / 2 - GAP
    near, far, across = (low, min(0.3, high)), (max(0.7, low), high), (0.38, 0.62)
    ranges = {"left": (near, across), "right": (far, across), "top": (across, near), "bottom": (across, far),
              "center": ((0.42, 0.58), (0.42, 0.58))}[region]
    center = tuple(float(rng.uniform(*r)) for r in ranges)
    noun = VOCABULARY.object_phrase(shape, color)
    article = "an" if size[0] in "aeiou" else "a"
    captions = [f"{article} {size} {color} {shape} {VOCABULARY.REGIONS[region]}",
                f"{noun} {VOCABULARY.REGIONS[region]}", f"{article} {size} {color} {shape}", noun,
                VOCABULARY.object_phrase(shape)]
    return [(shape, color, side, center)], captions


def count(rng: np.random.Generator, shape: str = NEW_SHAPE):
    """Two or three objects of one shape and colour, apart, and their captions ("two red stars")."""
    number = int(rng.integers(2, 4))
    color = str(rng.choice(list(VOCABULARY.COLORS)))
    for _ in range(200):
        objects = []
        for _ in range(number):
            side = _side(rng, "small")
            low, high = side / 2 + GAP, 1 - side / 2 - GAP
            center = (float(rng.uniform(low, high)), float(rng.uniform(low, high)))
            reach = [(side + other[2]) / 2 + GAP for other in objects]
            if all(abs(center[0] - o[3][0]) >= r or abs(center[1] - o[3][1]) >= r for o, r in zip(objects, reach)):
                objects.append((shape, color, side, center))
        if len(objects) == number:
            break
    return objects, [VOCABULARY.object_phrase(shape, color, number), VOCABULARY.object_phrase(shape, None, number)]


def scene(seed: int, index: int, shape: str = NEW_SHAPE, count_share: float = 0.25):
    """Scene ``index`` of ``seed``: a single object (or, with probability ``count_share``, two or
    three of one colour); ``(objects, captions)``."""
    rng = np.random.default_rng([seed, index])
    return count(rng, shape) if rng.random() < count_share else single(rng, shape)
