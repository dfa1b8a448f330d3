"""The eval plugin's layout: its modules import each other without a cycle (shared pieces,
``commands``, ``datasets`` and ``clip_inputs``, sit below the evaluations that use them), and what
it needs of the datasets comes through the registry, with a message naming the data plugin when
that is missing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sfumato

import sfumato_eval
from sfumato_eval.geneval import prompt_set

PACKAGE = Path(sfumato_eval.__file__).parent


def sibling_imports(path: Path) -> set[str]:
    """The modules of the package that ``path`` imports (``from .x import ...``)."""
    return {node.module.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or ``[]`` when there is none."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        for imported in sorted(graph.get(module, ())):
            if imported in path:
                return path[path.index(imported):] + [imported]
            if imported not in done:
                found = visit(imported, path + [imported])
                if found:
                    return found
        done.add(module)
        return []

    for module in sorted(graph):
        cycle = visit(module, [module])
        if cycle:
            return cycle
    return []


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_eval_modules_import_each_other_without_a_cycle():
    graph = {path.stem: sibling_imports(path) for path in PACKAGE.glob("*.py")}
    assert {"commands", "datasets", "geneval", "digits_classifier", "zero_shot", "retrieval"} <= set(graph)
    assert find_cycle(graph) == [], " -> ".join(find_cycle(graph))


def test_without_the_data_plugin_the_shapes_vocabulary_is_missing_by_name(monkeypatch):
    monkeypatch.setenv("SFUMATO_DISABLE_PLUGINS", "data")
    sfumato.set_registry(None)
    try:
        with pytest.raises(sfumato.SpecError, match="shapes vocabulary .* comes from the 'shapes' dataset of the data"):
            prompt_set()
    finally:
        sfumato.set_registry(None)
