"""Fixtures of the SD checkpoint tests: the tiny pipeline as a diffusers folder and as a single file."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers")

from sd.tiny_sd import write_single_file, write_tiny_sd  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """The tiny SD 1.x pipeline's diffusers folder (see ``sd.tiny_sd``)."""
    return write_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_sd_file(tiny_sd, tmp_path_factory) -> Path:
    """The tiny pipeline as an SD 1.x single-file ``.safetensors`` checkpoint."""
    return write_single_file(tiny_sd, tmp_path_factory.mktemp("tiny-sd-file") / "tiny-sd.safetensors")
