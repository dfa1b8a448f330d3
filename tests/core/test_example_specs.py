"""The example specs validate (CLI exit 0), satisfy the JSON Schema, and run end to end with the
first-party plugins."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest
import torch

import sfumato
from sfumato.cli import main
from sfumato.specs import read_spec_file

SPECS = sorted((Path(__file__).parents[2] / "examples" / "specs").glob("*.toml"))


@pytest.fixture(autouse=True)
def default_registry():
    sfumato.set_registry(None)
    yield
    sfumato.set_registry(None)


def test_there_are_example_specs():
    assert len(SPECS) >= 3


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_example_spec_validates(path, capsys):
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_schema_accepts_every_example_spec(capsys):
    main(["schema"])
    schema = json.loads(capsys.readouterr().out)
    for path in SPECS:
        jsonschema.validate(read_spec_file(path), schema)
        jsonschema.validate(tomllib.loads(path.read_text()), schema)  # extends kept as written


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_example_spec_generates(path):
    torch.manual_seed(0)
    pipe = sfumato.load_pipeline(path)
    inputs = {"labels": [1, 7]} if pipe.task.type_name() == "class-to-image" else {"prompt": ["a red circle", "a blue square"]}
    result = pipe(**inputs, seed=0, progress=False)
    assert len(result.images) == 2
    assert result.images[0].size == (pipe.task.spec.width, pipe.task.spec.height)
    assert torch.isfinite(result.latents).all()
