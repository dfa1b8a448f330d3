"""Fixtures of the SDXL tests: the tiny SDXL pipeline as a diffusers folder."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers")

from sdxl.tiny_sdxl import write_tiny_sdxl  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    """The tiny SDXL pipeline's diffusers folder (see ``sdxl.tiny_sdxl``)."""
    return write_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="session")
def tiny_sdxl_file(tiny_sdxl, tmp_path_factory) -> Path:
    """The tiny SDXL pipeline as an SDXL single-file ``.safetensors`` checkpoint (SGM key layout)."""
    from sdxl.tiny_sdxl import write_single_file

    return write_single_file(tiny_sdxl, tmp_path_factory.mktemp("tiny-sdxl-file") / "tiny-sdxl.safetensors")
