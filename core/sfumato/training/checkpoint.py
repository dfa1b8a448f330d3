"""Resumable checkpoints: one file per saved step, written atomically, read with ``weights_only``.

A checkpoint holds everything the next step depends on: the trained modules, the optimiser, the
gradient scaler, the EMA, the learning-rate schedule's step, every process's RNG states and the
data position. Files are ``checkpoints/step-00000100.pt``; a write goes to a hidden temporary
file that is renamed into place (``sfumato.atomic_write``), so a run killed mid-write leaves the
previous checkpoint as the latest complete one. It also records a hash of the trained modules'
architecture, so that resuming with a spec that builds other shapes is refused by name.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SfumatoError, WeightsError
from ..weights import atomic_write, check_state_dict

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(SfumatoError):
    """A checkpoint cannot be read or does not fit the run resuming from it."""


def checkpoint_path(out: Path, step: int) -> Path:
    return out / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``out``, oldest first (temporary files are never listed)."""
    folder = out / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(out: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and delete all but the ``keep`` newest."""
    path = atomic_write(checkpoint_path(out, step), lambda tmp: torch.save(state, tmp))
    for _, old in list_checkpoints(out)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc}); delete it to resume from an "
                              "earlier one") from exc


def latest_checkpoint(out: Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def architecture_hash(modules: dict[str, nn.Module]) -> str:
    """SHA-256 of every trained module's parameter and buffer names and shapes: the checkpoints of
    two runs fit each other's modules exactly when their hashes agree."""
    layout = {name: {key: list(value.shape) for key, value in module.state_dict().items()}
              for name, module in modules.items()}
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()


def check_architecture(state: dict[str, Any], modules: dict[str, nn.Module], source: Path) -> None:
    """Refuse a checkpoint whose trained modules have other names or shapes than ``modules``,
    listing the first differences (checkpoints written before the hash was recorded are compared
    key by key)."""
    if state.get("architecture") == architecture_hash(modules):
        return
    saved = state["modules"]
    problems = [f"module {name!r} is in the checkpoint but not trained by this spec" for name in saved
                if name not in modules]
    for name, module in modules.items():
        if name not in saved:
            problems.append(f"module {name!r} is trained by this spec but not in the checkpoint")
            continue
        try:
            check_state_dict(module, saved[name], f"its module {name!r}", shown=2)
        except WeightsError as exc:
            problems.append(str(exc))
    if problems or "architecture" in state:
        raise CheckpointError(f"{source}: the checkpoint was written by a run with another architecture; resume "
                              "with the spec that run used, or start a new run without --resume (--overwrite, or "
                              "another --out)"
                              + "".join(f"\n  {problem}" for problem in problems))
