"""The recipes that rebuild the built-in models (``builds/<family>/``, outside the installed
package) still run from a checkout: every spec a ``build.sh`` trains validates against the full
registry and finds the shipped tokenizer and the earlier runs it starts from, and the Python steps
import and point at the plugin's model folder and at runs the build makes."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import sfumato
import sfumato_models
from sfumato.specs import load_spec, read_spec_file

ROOT = Path(__file__).parents[2]
BUILDS = ROOT / "builds"
RUNS = ROOT / "runs"
FAMILIES = sorted(p.name for p in BUILDS.iterdir() if (p / "build.sh").is_file())


def trained_specs(family: str) -> list[Path]:
    """The spec files ``build.sh`` passes to ``sfumato train``, in the order it trains them."""
    script = (BUILDS / family / "build.sh").read_text()
    return [BUILDS / family / name for name in re.findall(r'sfumato train "\$here/([\w.-]+\.toml)"', script)]


def file_fields(table: dict, found: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """Every (field, resolved path) of ``weights`` and ``tokenizer`` in a read spec."""
    found = [] if found is None else found
    for key, value in table.items():
        if key in ("weights", "tokenizer") and isinstance(value, str):
            found.append((key, value))
        elif isinstance(value, dict):
            file_fields(value, found)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    file_fields(item, found)
    return found


SHIPPED = sorted(p.parent.name for p in Path(sfumato_models.__file__).parent.glob("*/spec.toml"))


def test_every_shipped_model_folder_has_a_build():
    """A build folder rebuilds a shipped model (the same name, with ``package.py``) or makes an
    extra for one (``shapes_lora``: the example LoRA shipped in the shapes folder)."""
    assert SHIPPED and set(SHIPPED) <= set(FAMILIES)
    for family in set(FAMILIES) - set(SHIPPED):
        script = (BUILDS / family / "build.sh").read_text()
        assert any(f"plugins/sfumato_models/{model}/" in script for model in SHIPPED), (
            f"builds/{family} neither rebuilds a shipped model nor writes into one's folder")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_training_spec_of_a_build_validates(family):
    specs = trained_specs(family)
    assert specs, f"builds/{family}/build.sh trains nothing"
    untrained = {p.name for p in (BUILDS / family).glob("*.toml")} - {p.name for p in specs}
    assert not untrained, f"builds/{family}/build.sh does not train {sorted(untrained)}"
    for spec in specs:
        assert spec.is_file(), f"builds/{family}/build.sh trains {spec.name}, which is missing"
        load_spec(spec, sfumato.get_registry())  # raises SpecError naming the table and field


@pytest.mark.parametrize("family", FAMILIES)
def test_training_specs_read_the_shipped_tokenizer_and_earlier_runs(family):
    outs: list[Path] = []
    for spec in trained_specs(family):
        data = read_spec_file(spec)
        for field, path in file_fields(data):
            where = f"{spec.relative_to(ROOT)} {field} = {path}"
            if field == "tokenizer":
                models = [family] if family in SHIPPED else SHIPPED
                assert Path(path) in {Path(sfumato_models.__file__).parent / m / "tokenizer.json" for m in models}, where
            elif family not in SHIPPED and Path(path).parent.parent == Path(sfumato_models.__file__).parent:
                pass  # an extra's base: the shipped model's own weights
            else:
                assert Path(path).parent in outs, f"{where}: not written by a spec trained before it"
        outs.append(ROOT / data["train"]["out"])
        assert outs[-1].is_relative_to(RUNS), f"{spec.relative_to(ROOT)} writes outside runs/"


@pytest.mark.parametrize("family", FAMILIES)
def test_build_scripts_import_from_a_checkout_and_point_at_the_plugin(family, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    outs = {ROOT / read_spec_file(spec)["train"]["out"] for spec in trained_specs(family)}
    scripts = sorted((BUILDS / family).glob("*.py"))
    assert family not in SHIPPED or any(p.name == "package.py" for p in scripts)
    for script in scripts:
        module = importlib.import_module(f"builds.{family}.{script.stem}")
        if hasattr(module, "MODEL"):
            assert module.MODEL in {Path(sfumato_models.__file__).parent / model for model in SHIPPED}
            assert family not in SHIPPED or module.MODEL == Path(sfumato_models.__file__).parent / family
        runs = {v for v in vars(module).values() if isinstance(v, Path) and v != RUNS and v.is_relative_to(RUNS)}
        assert runs <= outs, f"{script.name} reads runs no spec of build.sh writes: {sorted(runs - outs)}"
