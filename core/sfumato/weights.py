"""Reading and writing weights: safetensors in and out, atomic writes, strict key checking.

Pickle checkpoints (``.ckpt``, ``.pt``, ``.bin``) are refused unless the caller passes
``allow_pickle=True`` (a Python argument; no command loads pickle weights), and then load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import SfumatoError, WeightsError

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl"}
#: ``atomic_write``'s temporary files: ``.<name>.<8 random characters>.tmp`` beside the target.
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
#: Free bytes below which a failed write is taken to have filled the disk (torch's own file writer
#: reports a full disk as a RuntimeError about stream positions, without errno).
_DISK_FULL_MARGIN = 1 << 20


class DiskFullError(SfumatoError, OSError):
    """A file could not be written because its disk (or the user's quota) is full."""

    def __init__(self, path: Path):
        super().__init__(f"{path}: no space left on device while writing it; nothing was written (the previous "
                         "file, if any, is unchanged). Free some space and run again")
        self.path = path


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``.

    A crash during the write leaves any previous file at ``path`` intact and never a partial one.
    A full disk is a ``DiskFullError`` naming ``path``, and the partial temporary file is removed.
    A process killed mid-write leaves its temporary file behind: ``remove_stale_temporaries``
    deletes those once no writer can be running.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a saved file is an ordinary file
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if _disk_full(exc, path.parent):
            raise DiskFullError(path) from exc
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc``, raised while writing into ``folder``, means the disk or quota is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < _DISK_FULL_MARGIN
    except OSError:
        return False


def remove_stale_temporaries(folder: str | Path) -> dict[Path, int]:
    """Delete the temporary files that ``atomic_write`` calls killed mid-write left in ``folder``
    (not below it); returns their sizes in bytes. Call it only when no other process can be
    writing there."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    stale = {p: p.stat().st_size for p in folder.iterdir() if _TEMPORARY.match(p.name) and p.is_file()}
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_weights(
    state_dict: Mapping[str, Tensor], path: str | Path, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write a state dict as safetensors, atomically. Metadata values that are not strings are
    stored as JSON (a component's spec, for example, so the file says what architecture it is)."""
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_weights(path: str | Path, allow_pickle: bool = False) -> dict[str, Tensor]:
    """Load a state dict from safetensors (or, only with ``allow_pickle``, a pickle checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise WeightsError(
                f"{path}: refusing to load a pickle checkpoint, which can run arbitrary code. Convert it to "
                "safetensors once, in Python, if you trust it: sfumato.save_weights(sfumato.load_weights(path, "
                "allow_pickle=True), \"model.safetensors\"); commands load safetensors only."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc


def check_state_dict(
    module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "weights", shown: int = 20
) -> None:
    """Raise one ``WeightsError`` listing the missing, unexpected and mis-shaped keys (``shown`` of
    each, then a count)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(expected[k].shape) != tuple(state_dict[k].shape)
    )
    problems = []
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            listed = keys[:shown] + ([f"... and {len(keys) - shown} more"] if len(keys) > shown else [])
            problems.append(f"{len(keys)} {title} key(s):\n    " + "\n    ".join(listed))
    if problems:
        raise WeightsError(f"{source} does not match {type(module).__name__}:\n  " + "\n  ".join(problems))


def load_into(module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "weights") -> nn.Module:
    """Strictly load ``state_dict`` into ``module`` (after ``check_state_dict``), keeping dtypes."""
    check_state_dict(module, state_dict, source)
    module.load_state_dict(state_dict, strict=True)
    return module


def rename_by_prefix(state_dict: Mapping[str, Tensor], pairs: list[tuple[str, str]], source: str,
                     what: str = "the model") -> dict[str, Tensor]:
    """Rename each key of ``state_dict`` by the longest of the ``(old_prefix, new_prefix)`` pairs
    it starts with (checkpoint layouts that differ by module paths: the original LDM numbering of
    a U-Net, a ControlNet, ...). A key no prefix matches is a ``WeightsError`` naming ``source``
    and listing the first twenty."""
    pairs = sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)
    renamed, unmatched = {}, []
    for key, value in state_dict.items():
        match = next(((old, new) for old, new in pairs if key.startswith(old)), None)
        if match is None:
            unmatched.append(key)
        else:
            renamed[match[1] + key[len(match[0]):]] = value
    if unmatched:
        shown = "\n    ".join(sorted(unmatched)[:20])
        raise WeightsError(f"{source}: {len(unmatched)} key(s) have no place in {what}:\n    {shown}")
    return renamed


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (recorded in output locks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


SPEC_METADATA_KEY = "sfumato.spec"
KIND_METADATA_KEY = "sfumato.kind"


def save_component(component: Any, path: str | Path, extra_metadata: Mapping[str, Any] | None = None) -> Path:
    """Save a weighted component's state dict with its kind and spec in the metadata, so the
    file says what architecture it holds (``read_component_spec`` reads it back)."""
    metadata = {
        KIND_METADATA_KEY: component.kind,
        SPEC_METADATA_KEY: component.spec.model_dump_json(exclude={"weights"} if "weights" in type(component.spec).model_fields else None),
        **(extra_metadata or {}),
    }
    return save_weights(component.state_dict(), path, metadata)


def read_component_spec(path: str | Path) -> dict[str, Any] | None:
    """The component spec recorded in a weights file by ``save_component`` (None if absent)."""
    raw = read_metadata(path).get(SPEC_METADATA_KEY)
    return json.loads(raw) if raw else None
