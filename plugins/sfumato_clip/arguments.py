"""Argument checks the CLIP commands share, so that bad values stop before any model loads."""

from __future__ import annotations

import argparse
from pathlib import Path

import sfumato


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def check_out(path: str, overwrite: bool = False, flag: str = "--out") -> Path:
    """``path`` as the file a command will write: not a directory, and not an existing file
    unless ``overwrite`` (the user's data is never replaced unasked)."""
    out = Path(path)
    if out.is_dir():
        raise sfumato.SpecError(f"{flag} {path}: is a directory; give a file name inside it")
    if out.exists() and not overwrite:
        raise sfumato.SpecError(f"{flag} {path}: the file exists; pass --overwrite to replace it")
    return out
