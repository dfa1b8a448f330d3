"""Output locks: what produced an image, written into it so it can be replayed exactly.

A lock holds the resolved spec, the sfumato and plugin versions, the SHA-256 of every weights
file, and the call's arguments (prompt, seed, steps, ...). PNGs carry it as a text chunk named
``sfumato``; ``sfumato generate --from IMAGE.png`` reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, PngImagePlugin

from ._version import __version__
from .errors import SpecError
from .weights import atomic_write, file_sha256

if TYPE_CHECKING:
    from .pipeline import Pipeline

PNG_KEY = "sfumato"


def weight_files(spec: dict[str, Any]) -> list[str]:
    """Every ``weights`` path named anywhere in a resolved spec dict."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "weights" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(spec)
    return found


def make_lock(pipe: Pipeline, arguments: dict[str, Any]) -> dict[str, Any]:
    """The lock of one call of ``pipe`` with ``arguments`` (JSON-serialisable values only)."""
    spec = pipe.spec.to_dict()
    if not hasattr(pipe, "_weight_hashes"):
        pipe._weight_hashes = {p: file_sha256(p) for p in weight_files(spec) if Path(p).is_file()}
    return {
        "sfumato": __version__,
        "plugins": {p.name: p.version for p in pipe.registry.plugins() if p.status == "ok"},
        "weights": dict(pipe._weight_hashes),
        "spec": spec,
        "arguments": arguments,
    }


def save_png(image: Image.Image, path: str | Path, lock: dict[str, Any] | None = None) -> Path:
    """Write a PNG (atomically) with the lock in its ``sfumato`` text chunk."""
    info = PngImagePlugin.PngInfo()
    if lock is not None:
        info.add_text(PNG_KEY, json.dumps(lock, sort_keys=True))
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def read_lock(path: str | Path) -> dict[str, Any]:
    """The lock stored in a PNG written by sfumato; a clear error when there is none."""
    try:
        with Image.open(path) as image:
            text = image.text.get(PNG_KEY) if hasattr(image, "text") else None
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: not a readable image ({exc})") from exc
    if text is None:
        raise SpecError(f"{path}: has no sfumato lock (it was not written by sfumato generate)")
    return json.loads(text)


def check_weights(lock: dict[str, Any]) -> list[str]:
    """Weights files of a lock that are missing or changed since (empty when all match)."""
    problems = []
    for path, digest in lock.get("weights", {}).items():
        if not Path(path).is_file():
            problems.append(f"{path}: missing")
        elif file_sha256(path) != digest:
            problems.append(f"{path}: changed (sha256 differs from the lock)")
    return problems


def image_grid(images: list[Image.Image], columns: int | None = None) -> Image.Image:
    """Tile images (all the same size) into one grid image, row by row."""
    columns = columns or min(len(images), 4)
    rows = -(-len(images) // columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height), "white")
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * width, (i // columns) * height))
    return grid
