"""The vocabulary of the ``shapes`` dataset: shapes, named colours with their RGB, sizes, relations,
regions and how captions name objects. Its renderer and captions use it; whatever reads shapes
images from another plugin (the detector and prompts of ``sfumato_eval``) reaches this module as
``ShapesDataset.vocabulary`` through the registry, so there is one copy.

Coordinates are normalised to [0, 1] with the origin at the top-left corner and y growing
downwards, so "above" means a smaller y.
"""

from __future__ import annotations

from .prompts import article

#: The shapes drawn. Each fills a square box of side ``size``: the square fills all of it, the
#: circle pi/4 of it and the triangle (apex up, base at the bottom) half of it.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: Fraction of its bounding box each shape covers; the detector tells shapes apart by it.
FILL_RATIOS: dict[str, float] = {"circle": 0.785, "square": 1.0, "triangle": 0.5}

#: The palette: colour name -> RGB. The names are GenEval's colours that read well on a light
#: background; the values are far enough apart for nearest-colour detection.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 215, 40),
    "green": (40, 170, 70),
    "blue": (40, 90, 220),
    "purple": (130, 60, 190),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
}

#: The default background, a light grey that no palette colour is near.
BACKGROUND: tuple[int, int, int] = (235, 235, 235)

#: Size name -> the range of the object's side as a fraction of the image side.
SIZES: dict[str, tuple[float, float]] = {"small": (0.14, 0.18), "large": (0.26, 0.32)}

#: Sides below this fraction of the image are "small", above it "large" (between the ranges).
SIZE_THRESHOLD = 0.22

#: Spatial relation (GenEval's names) -> the words a caption uses: "a red circle above a blue square".
RELATIONS: dict[str, str] = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}

#: The relation that holds the other way round: "A above B" is "B below A".
INVERSE_RELATIONS: dict[str, str] = {
    "left of": "right of", "right of": "left of", "above": "below", "below": "above",
}

#: Centres closer than this along an axis are not "left of"/"above" each other (GenEval's margin).
RELATION_MARGIN = 0.1

#: Where a single object sits -> the words a caption uses: "a small yellow circle on the left".
REGIONS: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}

#: Count -> number word, for counting captions ("two green triangles").
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}

#: The most objects a scene holds.
MAX_OBJECTS = 4


def plural(shape: str) -> str:
    """``circle`` -> ``circles`` (every shape name takes a plain -s)."""
    return shape + "s"


def object_phrase(shape: str, color: str | None = None, count: int = 1) -> str:
    """How a caption names ``count`` objects of ``shape`` (and ``color``): ``"a circle"``,
    ``"an orange square"``, ``"three red triangles"``."""
    words = " ".join(([color] if color else []) + [plural(shape) if count > 1 else shape])
    return f"{NUMBER_WORDS[count] if count > 1 else article(words)} {words}"


def spatial_relations(a: tuple[float, float], b: tuple[float, float], margin: float = RELATION_MARGIN) -> list[str]:
    """The relations that hold from centre ``a`` to centre ``b``: ``["left of", "above"]`` when
    ``a`` is more than ``margin`` left of and above ``b``. Used to record a scene's relations and
    to check them on detected objects."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    relations = []
    if dx > margin:
        relations.append("left of")
    elif dx < -margin:
        relations.append("right of")
    if dy > margin:
        relations.append("above")
    elif dy < -margin:
        relations.append("below")
    return relations


def region_of(center: tuple[float, float]) -> str | None:
    """The region a centre lies in, or None when it is in none clearly (a corner, say)."""
    x, y = center
    if abs(x - 0.5) <= 0.12 and abs(y - 0.5) <= 0.12:
        return "center"
    if abs(y - 0.5) <= 0.2:
        if x <= 0.35:
            return "left"
        if x >= 0.65:
            return "right"
    if abs(x - 0.5) <= 0.2:
        if y <= 0.35:
            return "top"
        if y >= 0.65:
            return "bottom"
    return None


def size_name(side: float) -> str:
    """``small`` or ``large`` for an object side given as a fraction of the image side."""
    return "small" if side < SIZE_THRESHOLD else "large"
