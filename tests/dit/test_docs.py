"""docs/dit.md stays true: its field table lists every DiTSpec field with its default, and its
spec examples validate."""

import re
import tomllib
from pathlib import Path

import pytest

import sfumato
from sfumato.specs import load_spec
from sfumato_dit import DiTSpec

DOC = (Path(__file__).parents[2] / "docs" / "dit.md").read_text()


def written(default) -> str:
    """A default as the table writes it: none, true, `"sincos"`; numbers compare as numbers."""
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    return f'`"{default}"`'


def test_every_spec_field_is_in_the_table_with_its_default():
    rows = {name: cell.strip() for name, cell in re.findall(r"^\| `(\w+)` \| ([^|]+) \|", DOC, flags=re.M)}
    for name, field in DiTSpec.model_fields.items():
        if name == "type":
            continue
        assert name in rows, f"docs/dit.md has no row for {name}"
        default = field.default
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert float(rows[name]) == default, name
        else:
            assert rows[name] == written(default), name


@pytest.mark.parametrize("block", re.findall(r"```toml\n(.*?)```", DOC, flags=re.S), ids=["tiny", "dit-xl-2"])
def test_spec_examples_validate(block):
    spec = load_spec(tomllib.loads(block), sfumato.get_registry())
    assert spec.denoiser.type == "dit"
