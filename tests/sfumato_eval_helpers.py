"""Test helpers for the evaluations: shapes scenes drawn to satisfy a GenEval prompt, or to break
it in one chosen way (the known answers of the scoring tests)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from sfumato_eval.geneval import GenEvalPrompt
from sfumato_data.shapes_scene import Scene, ShapeObject, _place, render_scene
from sfumato_data.shapes_vocab import COLORS, SHAPES

#: How each task's prompt is broken by ``render_prompt(..., wrong=True)``.
MISTAKES = {
    "single_object": "another shape",
    "two_object": "the second shape replaced by the first",
    "counting": "one object too many or too few",
    "colors": "another colour",
    "position": "the two objects' positions swapped",
    "color_attr": "the two objects' colours swapped",
}


def _other(options, excluded: set[str], rng: np.random.Generator) -> str:
    choices = [o for o in options if o not in excluded]
    return choices[int(rng.integers(len(choices)))]


def _positioned_pair(lower: ShapeObject, upper: ShapeObject, relation: str, rng: np.random.Generator) -> None:
    """Move ``upper`` to ``relation`` of ``lower``: 0.3 of the image apart on the relation's axis."""
    main, cross = rng.uniform(0.28, 0.34), rng.uniform(0.4, 0.6)
    first, second = (main, 1 - main) if relation in ("left of", "above") else (1 - main, main)
    horizontal = relation in ("left of", "right of")
    upper.center = (first, cross) if horizontal else (cross, first)
    lower.center = (second, cross) if horizontal else (cross, second)


def prompt_scene(prompt: GenEvalPrompt, rng: np.random.Generator, wrong: bool = False) -> Scene:
    """A scene that satisfies ``prompt`` (``wrong=False``) or fails it as ``MISTAKES`` says."""
    specs: list[tuple[str, str, str]] = []
    colours_used: set[str] = set()
    for req in prompt.include:
        colour = req.color or _other(COLORS, colours_used, rng)
        colours_used.add(colour)
        specs += [(req.shape, colour, "small")] * req.count
    if wrong:
        task = prompt.task
        if task == "single_object":
            specs = [(_other(SHAPES, {specs[0][0]}, rng), specs[0][1], "small")]
        elif task == "two_object":
            specs[1] = (specs[0][0], specs[1][1], "small")
        elif task == "counting":
            count = len(specs) + (1 if rng.random() < 0.5 or len(specs) == 1 else -1)
            specs = [specs[0]] * count
        elif task == "colors":
            specs = [(specs[0][0], _other(COLORS, {specs[0][1]}, rng), "small")]
        elif task == "color_attr":
            (shape_a, colour_a, _), (shape_b, colour_b, _) = specs
            specs = [(shape_a, colour_b, "small"), (shape_b, colour_a, "small")]
    if prompt.task == "position":
        lower, upper = (ShapeObject(shape, colour, "small", 0.2, (0.5, 0.5)) for shape, colour, _ in specs)
        relation = prompt.include[1].relation[0]
        _positioned_pair(lower, upper, relation, rng)
        if wrong:
            lower.center, upper.center = upper.center, lower.center
        return Scene("pair", [lower, upper], relation=relation)
    return Scene("mixed", _place(rng, specs))


def render_prompt(prompt: GenEvalPrompt, rng: np.random.Generator, wrong: bool = False,
                  resolution: int = 64) -> Image.Image:
    """The image of ``prompt_scene``, drawn by the shapes renderer."""
    return render_scene(prompt_scene(prompt, rng, wrong), resolution)
