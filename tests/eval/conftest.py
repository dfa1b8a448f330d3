"""Fixtures for the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

EXAMPLE_SPECS = Path(__file__).parents[2] / "examples" / "specs"


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many tiny forwards; on a shared CPU one thread is several times faster than
    two contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def example_spec():
    """The path of an example spec: ``example_spec("tiny-pixel-classes")``."""
    return lambda name: str(EXAMPLE_SPECS / f"{name}.toml")
