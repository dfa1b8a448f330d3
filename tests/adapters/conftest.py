"""Fixtures of the adapter tests: the tiny SD 1.x pipeline as a diffusers folder (see ``sd.tiny_sd``)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers")

from sd.tiny_sd import write_tiny_sd  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """The tiny SD 1.x pipeline's diffusers folder."""
    return write_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))
