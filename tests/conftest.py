from __future__ import annotations

import pytest
import torch

import sfumato
import sfumato_test_doubles
from sfumato.testing import fresh_registry


@pytest.fixture
def doubles():
    """A registry holding only the test doubles (plugin ``test``), installed process-wide."""
    with fresh_registry(sfumato_test_doubles) as registry:
        yield registry


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
