"""The pytest plugin behind ``sfumato.testing`` (registered via the ``pytest11`` entry point)."""

from __future__ import annotations

from typing import Iterator

import pytest

from ..registry import Registry
from .fixtures import fresh_registry


@pytest.fixture
def sfumato_registry() -> Iterator[Registry]:
    """An empty registry installed as the process-wide one; add plugins with
    ``sfumato_registry.add_plugin(name, module, "local")``."""
    with fresh_registry() as registry:
        yield registry
