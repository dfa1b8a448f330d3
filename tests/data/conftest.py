"""Fixtures for the dataset tests: tiny image files written in the real formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (12, 8)) -> Path:
    """A solid ``color`` image of ``size`` (width, height), in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), color, dtype=np.uint8), "RGB").save(path)
    return path


@pytest.fixture
def image_writer():
    """``write_image(path, color, size=(w, h))``: write a solid-colour image file."""
    return write_image
