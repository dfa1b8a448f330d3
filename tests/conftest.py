from __future__ import annotations

import os

import pytest
import torch

import sfumato
import sfumato_test_doubles
from sfumato.testing import fresh_registry


if os.environ.get("PYTEST_XDIST_WORKER"):
    # One intra-op thread per xdist worker: workers that each spin several OpenMP threads on a
    # small machine wait on each other far more than they compute.
    torch.set_num_threads(1)


@pytest.fixture
def doubles():
    """A registry holding only the test doubles (plugin ``test``), installed process-wide."""
    with fresh_registry(sfumato_test_doubles) as registry:
        yield registry


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
