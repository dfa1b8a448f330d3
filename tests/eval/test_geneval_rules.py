"""The GenEval-style benchmark without a model: the prompt set, the rules on hand-made detections,
and the score of real shapes images (correct by construction: ~1.0) and of deliberately wrong ones
(0 on every task)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sfumato_eval_helpers import MISTAKES, render_prompt

from sfumato_data import ShapesDataset
from sfumato_eval import detect_shapes
from sfumato_eval.geneval import (
    TASKS, colors_prompt, color_attr_prompt, counting_prompt, evaluate, position_prompt, prompt_set,
    single_object_prompt, summarise, two_object_prompt,
)


def obj(shape: str, color: str, x: float = 0.5, y: float = 0.5) -> dict:
    """A detection as ``detect_shapes`` reports it (only the keys the rules read)."""
    return {"shape": shape, "color": color, "center": [x, y]}


def test_the_prompt_set_has_90_prompts_in_the_documented_counts():
    prompts = prompt_set()
    assert Counter(p.task for p in prompts) == {
        "single_object": 3, "two_object": 6, "counting": 9, "colors": 24, "position": 24, "color_attr": 24,
    }
    assert len({p.prompt for p in prompts}) == 90
    assert [p.task for p in prompts] == sorted((p.task for p in prompts), key=TASKS.index)


def test_the_prompt_set_is_fixed_by_its_seed():
    assert prompt_set(0) == prompt_set(0)
    changed = [a.prompt for a, b in zip(prompt_set(0), prompt_set(1)) if a != b]
    assert changed and all(a.task in ("position", "color_attr") for a, b in zip(prompt_set(0), prompt_set(1)) if a != b)


def test_prompts_are_worded_as_the_shapes_captions():
    assert single_object_prompt("circle").prompt == "a circle"
    assert two_object_prompt("square", "triangle").prompt == "a square and a triangle"
    assert counting_prompt("triangle", 3).prompt == "three triangles"
    assert colors_prompt("orange", "circle").prompt == "an orange circle"
    assert position_prompt(("red", "circle"), "left of", ("blue", "square")).prompt == \
        "a red circle to the left of a blue square"
    assert color_attr_prompt(("red", "circle"), ("blue", "square")).prompt == "a red circle and a blue square"


@pytest.mark.parametrize(("prompt", "objects", "passed", "reason"), [
    (single_object_prompt("circle"), [obj("circle", "red")], True, ""),
    (single_object_prompt("circle"), [obj("square", "red")], False, "expected circle >= 1, found 0"),
    (two_object_prompt("circle", "square"), [obj("circle", "red"), obj("square", "blue"), obj("triangle", "red")],
     True, ""),
    (two_object_prompt("circle", "square"), [obj("circle", "red"), obj("circle", "blue")], False,
     "expected square >= 1, found 0"),
    (counting_prompt("circle", 2), [obj("circle", "red"), obj("circle", "blue"), obj("square", "red")], True, ""),
    (counting_prompt("circle", 2), [obj("circle", "red")] * 3, False, "expected circle < 3, found 3"),
    (counting_prompt("circle", 2), [obj("circle", "red")], False, "expected circle >= 2, found 1"),
    (colors_prompt("red", "circle"), [obj("circle", "blue"), obj("circle", "red")], True, ""),
    (colors_prompt("red", "circle"), [obj("circle", "blue"), obj("square", "red")], False,
     "expected 1 red circle, found blue"),
    (color_attr_prompt(("red", "circle"), ("blue", "square")), [obj("circle", "blue"), obj("square", "red")], False,
     "expected 1 red circle, found blue; expected 1 blue square, found red"),
    # position: the circle must be above the square by more than the 0.1 margin; colours are not checked
    (position_prompt(("red", "circle"), "above", ("blue", "square")),
     [obj("circle", "green", 0.5, 0.2), obj("square", "pink", 0.55, 0.7)], True, ""),
    (position_prompt(("red", "circle"), "above", ("blue", "square")),
     [obj("circle", "red", 0.5, 0.45), obj("square", "blue", 0.5, 0.5)], False, "no circle above a square"),
    (position_prompt(("red", "circle"), "left of", ("blue", "square")),
     [obj("circle", "red", 0.8, 0.5), obj("square", "blue", 0.2, 0.5)], False, "no circle left of a square"),
    (position_prompt(("red", "circle"), "left of", ("blue", "square")), [obj("circle", "red", 0.2, 0.5)], False,
     "expected square >= 1, found 0; no square for the circle to be left of"),
])
def test_rules_on_hand_made_detections(prompt, objects, passed, reason):
    judgement = evaluate(prompt, objects)
    assert (judgement.passed, judgement.reason) == (passed, reason)


def test_overall_is_the_mean_over_tasks_not_over_images():
    summary = summarise(["counting", "colors", "colors", "colors"], [True, False, False, True])
    assert summary["tasks"]["counting"]["accuracy"] == 1.0
    assert summary["tasks"]["colors"] == {"images": 3, "passed": 1, "accuracy": pytest.approx(1 / 3)}
    assert summary["overall"] == pytest.approx((1 + 1 / 3) / 2)


def score(images_and_prompts) -> dict:
    tasks, passed = [], []
    for prompt, image in images_and_prompts:
        tasks.append(prompt.task)
        passed.append(evaluate(prompt, detect_shapes(image)).passed)
    return summarise(tasks, passed)


def test_images_drawn_for_each_prompt_score_1_on_every_task():
    rng = np.random.default_rng(0)
    summary = score((p, render_prompt(p, rng)) for p in prompt_set() for _ in range(2))
    assert {t: f["accuracy"] for t, f in summary["tasks"].items()} == {t: 1.0 for t in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_deliberately_wrong_images_score_0(task):
    """single_object: another shape; two_object: one shape twice; counting: one too many or few;
    colors: another colour; position: the objects swapped; color_attr: the colours swapped."""
    assert task in MISTAKES
    rng = np.random.default_rng(1)
    summary = score((p, render_prompt(p, rng, wrong=True)) for p in prompt_set() if p.task == task)
    assert summary["tasks"][task]["accuracy"] == 0.0


def test_real_shapes_dataset_images_pass_the_prompts_their_scenes_make():
    """Prompts built from the dataset's recorded attributes, scored on the dataset's 64 px images."""
    data = ShapesDataset.from_spec({"length": 120, "seed": 3})
    cases = []
    for item in data:
        attributes, image = item["attributes"], item["image"]
        objects = [(o["color"], o["shape"]) for o in attributes["objects"]]
        if attributes["scene"] == "single":
            (color, shape), = objects
            cases += [(single_object_prompt(shape), image), (colors_prompt(color, shape), image)]
        elif attributes["scene"] == "pair":
            a, b = objects
            cases += [(two_object_prompt(a[1], b[1]), image), (color_attr_prompt(a, b), image),
                      (position_prompt(a, attributes["relation"], b), image)]
        elif attributes["scene"] == "count":
            cases.append((counting_prompt(objects[0][1], len(objects)), image))
    summary = score(cases)
    assert {t: f["accuracy"] for t, f in summary["tasks"].items()} == {t: 1.0 for t in TASKS}
    assert min(f["images"] for f in summary["tasks"].values()) >= 20
