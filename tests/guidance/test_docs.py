"""docs/guidance.md: every example table validates against the registered Specs, and the field
tables list exactly each Spec's fields."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import sfumato

DOC = Path(__file__).parents[2] / "docs" / "guidance.md"


def toml_blocks() -> list[dict]:
    return [tomllib.loads(block) for block in re.findall(r"```toml\n(.*?)```", DOC.read_text(), flags=re.S)]


@pytest.mark.parametrize("index", range(len(toml_blocks())))
def test_example_tables_validate(index):
    data = toml_blocks()[index]
    registry = sfumato.get_registry()
    tables = [("guidance", g) for g in data.get("guidance", [])] + (
        [("classifier", data["classifier"])] if "classifier" in data else []
    )
    assert tables
    for kind, table in tables:
        registry.get(kind, table["type"]).Spec.model_validate(table)


@pytest.mark.parametrize("kind, name", [("guidance", "cfg"), ("guidance", "classifier"), ("guidance", "clip"),
                                        ("guidance", "autoguidance"), ("classifier", "noise-classifier")])
def test_field_tables_document_every_field(kind, name):
    spec = sfumato.get_registry().get(kind, name).Spec
    text = DOC.read_text()
    section = text[text.index(f"(`{name}`)"):]
    table = section[: section.index("\n\n", section.index("| field |"))]
    documented = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert documented == [f for f in spec.model_fields if f != "type"]
