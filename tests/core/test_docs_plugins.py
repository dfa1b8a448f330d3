"""docs/plugins.md is a tutorial whose code runs: this test runs it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import sfumato

DOC = Path(__file__).parents[2] / "docs" / "plugins.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def tutorial_modules(tmp_path, monkeypatch):
    """Write the tutorial's named python files into a folder on sys.path."""
    blocks = code_blocks("python")
    named = {block.splitlines()[0].removeprefix("# ").strip(): block for block in blocks if block.startswith("# ")}
    for name, block in named.items():
        (tmp_path / name).write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path, [b for b in blocks if not b.startswith("# ")]
    for module in ("acme_guidance", "test_acme_guidance"):
        sys.modules.pop(module, None)


def test_inline_example_runs(tutorial_modules):
    _, inline = tutorial_modules
    for block in inline:
        exec(compile(block, str(DOC), "exec"), {})


def test_conformance_suite_from_the_tutorial_passes(tutorial_modules):
    import test_acme_guidance

    suite = test_acme_guidance.TestX0Clamp()
    checks = [name for name in dir(suite) if name.startswith("test_")]
    assert len(checks) >= 6
    for name in checks:
        getattr(suite, name)()


def test_local_registry_from_the_tutorial_loads_the_plugin(tutorial_modules, monkeypatch):
    folder, _ = tutorial_modules
    toml_blocks = code_blocks("toml")
    (folder / "registry.toml").write_text(toml_blocks[0])
    spec = "\n".join(toml_blocks[1].splitlines()[3:])  # the acme table (cfg needs the guidance plugin)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("SFUMATO_REGISTRY", "registry.toml")
    registry = sfumato.Registry(first_party=False, entry_points=False)
    [info] = registry.plugins()
    assert (info.name, info.source, info.status) == ("acme", "local", "ok")
    assert "acme.x0-clamp" in spec
    assert registry.types("guidance") == ["acme.x0-clamp"]
