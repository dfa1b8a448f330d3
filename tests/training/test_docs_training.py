"""docs/training.md: its spec examples validate, and its recipe-writing example trains."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

import sfumato
from sfumato.specs import load_spec
from sfumato.testing import fresh_registry
from sfumato_training_helpers import UNET, losses, run, train_spec

DOC = Path(__file__).parents[2] / "docs" / "training.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(blocks("toml"))))
def test_spec_examples_validate(index):
    data = tomllib.loads(blocks("toml")[index])
    spec = load_spec(data, sfumato.get_registry())
    assert spec.task.type.startswith("train-")


def test_every_train_field_is_documented():
    table = DOC.read_text().split("## `[train]`")[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)?", table, flags=re.M))
    names = {name for pair in documented for name in pair if name}
    assert names == set(sfumato.TrainSpec.model_fields)


def test_recipe_example_trains(class_folder, tmp_path, monkeypatch):
    (tmp_path / "acme_recipes.py").write_text(blocks("python")[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    import acme_recipes

    try:
        with fresh_registry(acme_recipes, first_party=True):
            spec = train_spec({"type": "acme.train-denoiser"}, class_folder, steps=6,
                              denoiser=UNET, diffusion={"timesteps": 100})
            result = run(spec, tmp_path / "out")
    finally:
        sys.modules.pop("acme_recipes", None)
    curve = losses(result)
    assert sum(curve[-2:]) < sum(curve[:2])
    assert sfumato.read_component_spec(result.weights["denoiser"])["type"] == "unet"
