"""docs/schedulers.md, section "Sigma schedules": its table lists every first-party schedule with
exactly its fields, its TOML example validates, and its "write your own" schedule runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

import sfumato
import sfumato_schedulers
import sfumato_sigmas
from sigmas import acme_sigmas
from sigmas.formulations import FakeFormulation

DOC = Path(__file__).resolve().parents[2] / "docs" / "schedulers.md"


def section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Sigma schedules")
    return text[start:text.index("\n## ", start + 1)]


def test_table_lists_every_schedule_and_its_fields():
    rows = {match[0]: match[1] for match in re.findall(r"^\| `([a-z-]+)` \|([^|]*)\|", section(), flags=re.M)}
    assert set(rows) == set(sfumato_sigmas.SIGMA_SCHEDULES_BY_TYPE)
    for name, cls in sfumato_sigmas.SIGMA_SCHEDULES_BY_TYPE.items():
        documented = re.findall(r"`(\w+)` \(", rows[name])
        assert documented == [field for field in cls.Spec.model_fields if field != "type"], name


def test_toml_example_validates():
    (block,) = re.findall(r"```toml\n(.*?)```", section(), flags=re.S)
    table = tomllib.loads(block)["scheduler"]
    spec = sfumato_schedulers.SCHEDULERS_BY_TYPE[table["type"]].Spec.model_validate(table)
    assert spec.model_dump()["sigmas"] == "beta"  # every field at its default: the bare name


def test_write_your_own_example_is_the_tested_plugin():
    (block,) = re.findall(r"```python\n(.*?)```", section(), flags=re.S)
    namespace = {"sfumato": sfumato, "torch": torch, "Literal": Literal, "Field": Field}
    exec(compile(block, f"{DOC}:sigma schedule", "exec", dont_inherit=True), namespace)
    documented = namespace["Linear"].from_spec({"floor": 0.05})
    tested = acme_sigmas.Linear.from_spec({"floor": 0.05})
    formulation = FakeFormulation()
    assert torch.equal(documented.sigmas(formulation, 7), tested.sigmas(formulation, 7))
