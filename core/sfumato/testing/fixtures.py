"""A registry isolated from the installed plugins, for plugin tests."""

from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType
from typing import Iterator

from ..registry import Registry, Source, set_registry


@contextmanager
def fresh_registry(
    *plugins: ModuleType,
    first_party: bool = False,
    entry_points: bool = False,
    source: Source = "local",
) -> Iterator[Registry]:
    """A registry holding only ``plugins`` (plus the first-party ones if asked), installed as the
    process-wide registry for the duration of the block (``sfumato.build`` and
    ``sfumato.load_pipeline`` use it) and restored afterwards.

    Plugins added with ``source="local"`` (the default) follow the third-party rules: their type
    names must be namespaced. First-party plugin tests pass ``source="registry"``.
    """
    registry = Registry(first_party=first_party, entry_points=entry_points, local=None)
    for module in plugins:
        info = registry.add_plugin(module.__name__.split(".")[-1], module, source)
        if info is not None and info.status == "failed":
            raise AssertionError(f"plugin {info.name} failed to load: {info.error}")
    old = set_registry(registry)
    try:
        yield registry
    finally:
        set_registry(old)
