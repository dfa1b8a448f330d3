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


@pytest.fixture
def perturb():
    """Move every parameter of a module away from its initialisation (GroupNorm weights 1, zero
    gates and output layers, ...), so a parity test fails if any parameter is misplaced."""

    def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=g) * scale)
        return module.eval()

    return perturb
