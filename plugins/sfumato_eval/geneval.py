"""A GenEval-style compositional benchmark on shapes: the prompt set and the scoring rules.

GenEval (Ghosh et al. 2023, https://arxiv.org/abs/2310.11513) asks a text-to-image model for
compositions, finds the objects in each image with a detector and checks the prompt's
requirements. Here the objects are the ``shapes`` dataset's vocabulary (``shapes_vocabulary``)
and the detector is ``detect_shapes``. Six tasks, each a GenEval task with GenEval's rule:

=============  =================================  ===========================================  =======
task           example prompt                     an image passes when                         prompts
=============  =================================  ===========================================  =======
single_object  "a circle"                         a circle is found                            3
two_object     "a circle and a square"            a circle and a square are found              6
counting       "three squares"                    exactly three squares are found              9
colors         "a red circle"                     a red circle is found                        24
position       "a red circle above a blue square" a circle above a square is found (colours   24
                                                  are not checked, as in GenEval)
color_attr     "a red circle and a blue square"   a red circle and a blue square are found     24
=============  =================================  ===========================================  =======

Every prompt is written as the ``shapes`` captions are (with the vocabulary's ``object_phrase``),
so a model trained on them meets no unseen wording. Each prompt holds GenEval-style requirements: ``include`` (at least ``count``
objects of ``shape``, of ``color`` when given, and ``relation`` to the objects matched by an
earlier requirement) and ``exclude`` (fewer than ``count`` objects of ``shape``). Where GenEval
takes the detector's most confident boxes, this detector has no confidences, so a requirement
is met when *any* ``count`` matching objects exist and a relation holds for *some* pair.
Relations use ``spatial_relations`` (centres more than 0.1 of the image apart along an axis).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .datasets import shapes_vocabulary

TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

#: The counts asked for by the counting task (GenEval asks for 2 to 4).
COUNTS: tuple[int, ...] = (2, 3, 4)

#: Colour pairs drawn per ordered shape pair in the position and color_attr tasks.
PAIRS_PER_SHAPES = 4


@dataclass(frozen=True)
class Requirement:
    """``count`` objects of ``shape`` (of ``color`` when given); with ``relation`` ``(name, i)``,
    one of them must be ``name`` (``"above"``, ...) of an object matched by requirement ``i``."""

    shape: str
    count: int = 1
    color: str | None = None
    relation: tuple[str, int] | None = None


@dataclass(frozen=True)
class GenEvalPrompt:
    """One prompt of the benchmark: its task, its text and what an image must (not) contain."""

    task: str
    prompt: str
    include: tuple[Requirement, ...]
    exclude: tuple[Requirement, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Judgement:
    """Whether an image passed its prompt, and why not (empty when it passed)."""

    passed: bool
    reason: str = ""


def _noun(color: str | None, shape: str) -> str:
    """``"a red circle"`` (``"a circle"`` without a colour), as the captions say it."""
    return shapes_vocabulary().object_phrase(shape, color)


def single_object_prompt(shape: str) -> GenEvalPrompt:
    return GenEvalPrompt("single_object", _noun(None, shape), (Requirement(shape),))


def two_object_prompt(shape_a: str, shape_b: str) -> GenEvalPrompt:
    return GenEvalPrompt("two_object", f"{_noun(None, shape_a)} and {_noun(None, shape_b)}",
                         (Requirement(shape_a), Requirement(shape_b)))


def counting_prompt(shape: str, count: int) -> GenEvalPrompt:
    """Exactly ``count``: at least ``count`` and fewer than ``count + 1`` (GenEval's exclude)."""
    return GenEvalPrompt("counting", shapes_vocabulary().object_phrase(shape, count=count),
                         (Requirement(shape, count),), (Requirement(shape, count + 1),))


def colors_prompt(color: str, shape: str) -> GenEvalPrompt:
    return GenEvalPrompt("colors", _noun(color, shape), (Requirement(shape, color=color),))


def position_prompt(a: tuple[str, str], relation: str, b: tuple[str, str]) -> GenEvalPrompt:
    """``a`` and ``b`` are ``(color, shape)``: "a red circle above a blue square" requires a
    square, and a circle ``above`` it; the colours are words of the prompt only."""
    (color_a, shape_a), (color_b, shape_b) = a, b
    text = f"{_noun(color_a, shape_a)} {shapes_vocabulary().RELATIONS[relation]} {_noun(color_b, shape_b)}"
    return GenEvalPrompt("position", text, (Requirement(shape_b), Requirement(shape_a, relation=(relation, 0))))


def color_attr_prompt(a: tuple[str, str], b: tuple[str, str]) -> GenEvalPrompt:
    """``a`` and ``b`` are ``(color, shape)``: each object must have its own colour."""
    (color_a, shape_a), (color_b, shape_b) = a, b
    return GenEvalPrompt("color_attr", f"{_noun(color_a, shape_a)} and {_noun(color_b, shape_b)}",
                         (Requirement(shape_a, color=color_a), Requirement(shape_b, color=color_b)))


def prompt_set(seed: int = 0) -> list[GenEvalPrompt]:
    """The benchmark's 90 prompts, in task order. Colours of the position and color_attr prompts
    are drawn from ``seed`` (four distinct colour pairs per ordered shape pair); the rest is fixed."""
    vocabulary = shapes_vocabulary()
    rng = np.random.default_rng(seed)
    colors = list(vocabulary.COLORS)
    shapes = vocabulary.SHAPES
    shape_pairs = list(itertools.permutations(shapes, 2))  # 6 ordered pairs of different shapes

    def colour_pairs() -> list[tuple[str, str]]:
        pairs = list(itertools.permutations(colors, 2))
        return [pairs[i] for i in rng.choice(len(pairs), PAIRS_PER_SHAPES, replace=False)]

    prompts = [single_object_prompt(shape) for shape in shapes]
    prompts += [two_object_prompt(a, b) for a, b in shape_pairs]
    prompts += [counting_prompt(shape, n) for shape in shapes for n in COUNTS]
    prompts += [colors_prompt(color, shape) for shape in shapes for color in colors]
    for a, b in shape_pairs:
        for relation, (color_a, color_b) in zip(vocabulary.RELATIONS, colour_pairs()):
            prompts.append(position_prompt((color_a, a), relation, (color_b, b)))
    for a, b in shape_pairs:
        prompts += [color_attr_prompt((ca, a), (cb, b)) for ca, cb in colour_pairs()]
    return prompts


def evaluate(prompt: GenEvalPrompt, objects: list[dict[str, Any]]) -> Judgement:
    """Score one image's detected ``objects`` (``detect_shapes`` output) against ``prompt``."""
    spatial_relations = shapes_vocabulary().spatial_relations
    reasons: list[str] = []
    matched: list[list[dict[str, Any]] | None] = []
    for req in prompt.include:
        of_shape = [o for o in objects if o["shape"] == req.shape]
        found = [o for o in of_shape if req.color is None or o["color"] == req.color]
        ok = True
        if len(of_shape) < req.count:
            ok = False
            reasons.append(f"expected {req.shape} >= {req.count}, found {len(of_shape)}")
        elif len(found) < req.count:
            ok = False
            colours = ", ".join(sorted(o["color"] for o in of_shape))
            reasons.append(f"expected {req.count} {req.color} {req.shape}, found {colours}")
        elif req.relation is not None:
            relation, target = req.relation
            anchors = matched[target]
            if anchors is None:
                ok = False
                reasons.append(f"no {prompt.include[target].shape} for the {req.shape} to be {relation}")
            elif not any(relation in spatial_relations(o["center"], a["center"]) for o in found for a in anchors):
                ok = False
                reasons.append(f"no {req.shape} {relation} a {prompt.include[target].shape}")
        matched.append(found if ok else None)
    for req in prompt.exclude:
        present = sum(o["shape"] == req.shape for o in objects)
        if present >= req.count:
            reasons.append(f"expected {req.shape} < {req.count}, found {present}")
    return Judgement(not reasons, "; ".join(reasons))


def summarise(tasks: list[str], passed: list[bool]) -> dict[str, Any]:
    """Per-task accuracy (the fraction of that task's images that passed) and ``overall``, the
    unweighted mean over the tasks present, as GenEval reports it."""
    per_task: dict[str, dict[str, Any]] = {}
    for task in TASKS:
        outcomes = [p for t, p in zip(tasks, passed) if t == task]
        if outcomes:
            per_task[task] = {"images": len(outcomes), "passed": sum(outcomes),
                              "accuracy": sum(outcomes) / len(outcomes)}
    overall = sum(t["accuracy"] for t in per_task.values()) / len(per_task) if per_task else float("nan")
    return {"tasks": per_task, "overall": overall}
