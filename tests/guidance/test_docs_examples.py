"""docs/guidance.md teaches the step context, the cond/uncond hook and model patches with code:
every python block on the page runs, each on its own (its asserts are the page's claims), and the
combiners' and the perturbed-model methods' field tables list each Spec's fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sfumato

DOC = Path(__file__).parents[2] / "docs" / "guidance.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_example_runs(index):
    code = compile(python_blocks()[index], f"{DOC}:python-block-{index}", "exec", dont_inherit=True)
    exec(code, {"__name__": "guidance_doc"})


@pytest.mark.parametrize("name", ["apg", "cfg-zero-star", "perp-neg"])
def test_combiner_field_tables_document_every_field(name):
    spec = sfumato.get_registry().get("combiner", name).Spec
    text = DOC.read_text()
    table = text[text.index(f"| field of `{name}` |"):]
    table = table[: table.index("\n\n")]
    assert re.findall(r"^\| `(\w+)` \|", table, flags=re.M) == [f for f in spec.model_fields if f != "type"]


def test_every_first_party_combiner_is_documented():
    text = DOC.read_text()
    for name in sfumato.get_registry().types("combiner"):
        assert f"| `{name}`" in text, name


@pytest.mark.parametrize("name", ["pag", "seg", "skip-layer"])
def test_perturbed_guidance_field_tables_document_every_field(name):
    spec = sfumato.get_registry().get("guidance", name).Spec
    text = DOC.read_text()
    section = text[text.index(f"(`{name}`):"):]
    table = section[: section.index("\n\n", section.index("| field |"))]
    assert sorted(re.findall(r"^\| `(\w+)` \|", table, flags=re.M)) == sorted(f for f in spec.model_fields if f != "type")
