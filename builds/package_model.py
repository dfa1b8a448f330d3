"""Turning training runs into a built-in model folder: float16 weights plus a pipeline spec.

Used by each family's ``package.py``. The spec copies every component's table from the resolved
spec the harness wrote (``runs/*/trained.toml``), architecture included, so the spec says what
each weights file holds.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w

import sfumato

#: The repository checkout these scripts live in.
ROOT = Path(__file__).resolve().parent.parent
#: Where the training specs write their runs (their ``out = "runs/..."``, from the repository root).
RUNS = ROOT / "runs"
#: The shipped model folders, one per family.
MODELS = ROOT / "plugins" / "sfumato_models"


def trained_spec(run: Path) -> dict[str, Any]:
    """The resolved spec a training run wrote."""
    return tomllib.loads((run / "trained.toml").read_text())


def to_float16(source: Path, target: Path) -> None:
    """Copy a safetensors file with its floating tensors in float16, metadata kept."""
    state = sfumato.load_weights(source)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    sfumato.save_weights(half, target, sfumato.read_metadata(source))


def package(
    model: Path,
    spec: dict[str, Any],
    components: dict[str, tuple[Path, str, dict[str, Any]]],
    note: str,
    spec_name: str = "spec.toml",
) -> int:
    """Write ``model/spec_name`` from ``spec`` plus one table per component.

    :param components: spec table -> (a training run whose ``trained.toml`` has the table, the
        file name to ship, fields to set in the shipped table such as a tokenizer file name).
        The table's ``weights`` (relative to the run, or absolute) become the shipped file.
    :param spec_name: the spec file; variants that share a folder's weights each have their own.
    :returns: the total size of the weights shipped for these components in bytes.
    """
    spec = dict(spec)
    for table, (run, name, fields) in components.items():
        section = dict(trained_spec(run)[table])
        to_float16(run / section["weights"], model / name)  # an absolute path replaces `run`
        spec[table] = {**section, "weights": name, **fields}
    (model / spec_name).write_text(f"# {note}\n" + tomli_w.dumps(spec))
    return sum((model / name).stat().st_size for _, name, _ in components.values())
