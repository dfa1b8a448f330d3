"""docs/speed.md: every example spec validates, the python example runs, and each speedup's field
table lists exactly its Spec's fields."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import sfumato

DOC = Path(__file__).parents[2] / "docs" / "speed.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(blocks("toml"))))
def test_example_specs_validate(index):
    data = tomllib.loads(blocks("toml")[index])
    assert data["speedups"]
    pipe = sfumato.load_pipeline("shapes", overrides={"speedups": data["speedups"]})
    assert [s.type_name() for s in pipe.speedups] == [table["type"] for table in data["speedups"]]


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_example_runs(index):
    exec(compile(blocks("python")[index], f"{DOC}:python-block-{index}", "exec", dont_inherit=True),
         {"__name__": "speed_doc"})


@pytest.mark.parametrize("name", ["deepcache", "tome", "first-block-cache", "taylorseer"])
def test_field_tables_document_every_field(name):
    spec = sfumato.get_registry().get("speedup", name).Spec
    text = DOC.read_text()
    section = text[text.index(f"(`{name}`)"):]
    table = section[: section.index("\n\n", section.index("| field |"))]
    documented = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert documented == [field for field in spec.model_fields if field != "type"]
