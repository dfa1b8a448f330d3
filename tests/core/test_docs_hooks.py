"""Every hook is documented: a docstring in ``hookspecs.py`` and a row of the hooks table of
docs/plugins.md, which lists no hook that does not exist (as datasette's docs test does)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from sfumato import hookspecs

DOC = Path(__file__).parents[2] / "docs" / "plugins.md"
HOOKS = sorted(name for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(f, f"{hookspecs.hookspec.project_name}_spec"))


def documented_hooks() -> list[str]:
    """The hook names in the first column of the table under ``## Hooks`` in docs/plugins.md."""
    section = DOC.read_text().split("\n## Hooks\n", 1)[1].split("\n## ", 1)[0]
    return sorted(re.findall(r"^\| `(\w+)\(", section, flags=re.M))


def test_hookspecs_are_found():
    assert {"register_components", "spec_from_checkpoint"} <= set(HOOKS)


def test_every_hookspec_has_a_docstring():
    undocumented = [name for name in HOOKS if len(inspect.getdoc(getattr(hookspecs, name)) or "") < 100]
    assert undocumented == [], "each hook's docstring is its reference documentation"


def test_the_hooks_table_of_the_plugin_guide_lists_exactly_the_hooks():
    assert documented_hooks() == HOOKS
