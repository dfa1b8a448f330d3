"""Captions for ``shapes`` scenes, each tagged with the GenEval skill it exercises.

=============  ===============================================  ==========
tag            example                                          scenes
=============  ===============================================  ==========
single_object  "a circle"                                       single
colors         "a red circle"                                   single
size           "a small red circle"                             single
position       "a small yellow circle on the left";             single, pair
               "a red circle above a blue square"
two_object     "a circle and a square"                          pair
color_attr     "a red circle and a blue square"                 pair
counting       "two green triangles", "two circles and a square"  count, mixed
mixed          "two red circles and a blue square"              mixed
=============  ===============================================  ==========

Every caption of a scene is true of its image, so any of them can be the training caption.
"""

from __future__ import annotations

from collections import Counter

from .prompts import article
from .shapes_scene import Scene, ShapeObject
from .shapes_vocab import INVERSE_RELATIONS, REGIONS, RELATIONS, object_phrase


def _noun(obj: ShapeObject, color: bool = True) -> str:
    """``"a red circle"`` (or ``"a circle"``)."""
    return object_phrase(obj.shape, obj.color if color else None)


def _join(parts: list[str]) -> str:
    """``"a, b and c"``."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _groups(objects: list[ShapeObject], by_color: bool) -> str:
    """The objects grouped by shape (and colour), largest group first, then first appearance."""
    keys = [(o.shape, o.color if by_color else None) for o in objects]
    counts = Counter(keys)
    order = sorted(counts, key=lambda key: (-counts[key], keys.index(key)))
    return _join([object_phrase(shape, color, counts[shape, color]) for shape, color in order])


def scene_captions(scene: Scene) -> list[tuple[str, str]]:
    """Every ``(tag, caption)`` that describes ``scene``; the first is the most specific."""
    objects = scene.objects
    if scene.kind == "single":
        obj = objects[0]
        return [
            ("position", f"{article(obj.size)} {obj.size} {obj.color} {obj.shape} {REGIONS[scene.region]}"),
            ("position", f"{_noun(obj)} {REGIONS[scene.region]}"),
            ("size", f"{article(obj.size)} {obj.size} {obj.color} {obj.shape}"),
            ("colors", _noun(obj)),
            ("single_object", _noun(obj, color=False)),
        ]
    if scene.kind == "pair":
        a, b = objects
        # The relation the scene was built for first, then any other that also holds.
        relations = sorted((r for _, r, _ in scene.relations()), key=lambda r: r != scene.relation)
        captions = []
        for relation in relations:
            captions.append(("position", f"{_noun(a)} {RELATIONS[relation]} {_noun(b)}"))
            captions.append(("position", f"{_noun(b)} {RELATIONS[INVERSE_RELATIONS[relation]]} {_noun(a)}"))
        return captions + [
            ("color_attr", f"{_noun(a)} and {_noun(b)}"),
            ("two_object", f"{_noun(a, color=False)} and {_noun(b, color=False)}"),
        ]
    if scene.kind == "count":
        return [("counting", _groups(objects, by_color=True)), ("counting", _groups(objects, by_color=False))]
    return [("mixed", _groups(objects, by_color=True)), ("counting", _groups(objects, by_color=False))]
