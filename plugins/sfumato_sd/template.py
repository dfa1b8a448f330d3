"""The shipped SD 1.x spec (``configs/sd1.toml``): what a checkpoint that records no
configuration of its own is, and the tables a diffusers folder's configs do not replace."""

from __future__ import annotations

import copy
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

SD1_SPEC = Path(__file__).with_name("configs") / "sd1.toml"
#: Sampling steps of the default [scheduler] (diffusers' StableDiffusionPipeline default).
SD_STEPS = 50


@lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    return tomllib.loads(SD1_SPEC.read_text(encoding="utf-8"))


def sd1_template() -> dict[str, Any]:
    """A fresh copy of the SD 1.x spec, without weights."""
    return copy.deepcopy(_template())
