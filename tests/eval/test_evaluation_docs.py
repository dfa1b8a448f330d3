"""docs/evaluation.md states figures the code must keep true: the prompt counts and the
classifier's accuracy."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import sfumato

from sfumato_eval.digits_classifier import WEIGHTS
from sfumato_eval.geneval import prompt_set

DOC = (Path(__file__).parents[2] / "docs" / "evaluation.md").read_text()


def test_the_documented_prompt_counts_are_the_prompt_sets():
    rows = re.findall(r"^\| `(\w+)` \| \".*?\" \| .*? \| (\d+) \(", DOC, re.M)
    documented = {task: int(count) for task, count in rows}
    assert documented == dict(Counter(p.task for p in prompt_set()))
    assert f"{len(prompt_set())} prompts in all" in DOC


def test_the_documented_classifier_accuracy_is_the_shipped_weights():
    recorded = json.loads(sfumato.read_metadata(WEIGHTS)["sfumato.digits_classifier"])
    assert f"| accuracy on the digits test split (359 images) | {recorded['test_accuracy']} |" in DOC


def test_every_first_party_evaluation_is_documented():
    import argparse

    registry = sfumato.Registry(entry_points=False, local=None)
    evaluations = argparse.ArgumentParser().add_subparsers()
    registry.commands(evaluations, hook="register_eval_commands")
    names = set(evaluations.choices)
    assert names == {"geneval", "shapes-reconstruction", "digits", "zero-shot", "retrieval", "clip-benchmark"}
    assert names == set(re.findall(r"^## `sfumato eval ([\w-]+)`", DOC, re.M))
