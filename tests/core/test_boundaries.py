"""Architecture rules: the core never imports a plugin; a plugin uses only sfumato's public API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sfumato

ROOT = Path(__file__).parents[2]
CORE = ROOT / "core" / "sfumato"
PLUGINS = ROOT / "plugins"


def imported_modules(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) for every absolute import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


def test_core_never_imports_a_plugin():
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in CORE.rglob("*.py")
        for line, module, _ in imported_modules(path)
        if module.split(".")[0].startswith("sfumato_")
    ]
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("plugin", sorted(p.name for p in PLUGINS.iterdir() if p.is_dir() and p.name.startswith("sfumato_")))
def test_plugin_imports_only_the_public_api(plugin):
    public = set(sfumato.__all__)
    offences = []
    for path in (PLUGINS / plugin).rglob("*.py"):
        for line, module, names in imported_modules(path):
            top = module.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}"
            if top == "sfumato" and module != "sfumato":
                offences.append(f"{where} imports private module {module}")
            elif top == "sfumato":
                offences += [f"{where} imports sfumato.{n}, not in sfumato.__all__" for n in names if n not in public]
            elif top.startswith("sfumato_") and top != plugin:
                offences.append(f"{where} imports another plugin ({module})")
    assert not offences, "\n".join(offences)


def test_public_api_names_exist():
    missing = [name for name in sfumato.__all__ if not hasattr(sfumato, name)]
    assert not missing
