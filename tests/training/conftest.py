"""Fixtures for the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sfumato_training_helpers import write_class_folder


@pytest.fixture(scope="session")
def class_folder(tmp_path_factory) -> Path:
    """Four noisy blue and four noisy red 16 px images in class folders (labels 0 and 1)."""
    return write_class_folder(tmp_path_factory.mktemp("classes"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train faster on one thread, and far faster on a machine whose cores are busy
    (intra-op threads then wait for each other); restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
