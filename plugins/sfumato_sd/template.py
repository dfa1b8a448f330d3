"""The shipped SD 1.x and SDXL specs (``configs/sd1.toml``, ``configs/sdxl.toml``): what a checkpoint
that records no configuration of its own is, and the tables a diffusers folder's configs do not replace."""

from __future__ import annotations

import copy
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

SD1_SPEC = Path(__file__).with_name("configs") / "sd1.toml"
SDXL_SPEC = Path(__file__).with_name("configs") / "sdxl.toml"
#: Sampling steps of the default [scheduler] (diffusers' StableDiffusionPipeline default).
SD_STEPS = 50


@lru_cache(maxsize=2)
def _template(path: Path = SD1_SPEC) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def sd1_template() -> dict[str, Any]:
    """A fresh copy of the SD 1.x spec, without weights."""
    return copy.deepcopy(_template())


def sdxl_template() -> dict[str, Any]:
    """A fresh copy of the SDXL base spec (``configs/sdxl.toml``), without weights."""
    return copy.deepcopy(_template(SDXL_SPEC))
