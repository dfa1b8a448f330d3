"""``sfumato convert``: a checkpoint any plugin understands, written as a sfumato spec.

The output folder holds ``spec.toml`` (every field resolved, paths relative to it), one
safetensors file per weighted component (``sfumato.save_component``: sfumato's key names, the
component's spec in the metadata) and a copy of every other local file or folder a ``SpecPath``
field names (a text encoder's tokenizer, a plugin's vocabulary, nested components' weights), named
after its field (``text_encoder.tokenizer.json``); the files of the tables only training reads (a
dataset's folder) stay where they are. ``load_pipeline(out / "spec.toml")`` rebuilds exactly the
same pipeline, with no converter in the loop.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import tomli_w
from torch import nn

from ..errors import SpecError
from ..outputs import TRAINING_TABLES
from ..pipeline import Pipeline
from ..registry import Registry
from ..spec_paths import field_name, local_spec_paths, set_at
from ..weights import save_component

SPEC_NAME = "spec.toml"


def add(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser(
        "convert", help="write a checkpoint (diffusers folder, SD 1.x single file, spec) as a sfumato spec + safetensors",
        description="Load PATH as `sfumato.load_pipeline` does and write OUT/spec.toml with one safetensors "
        "file per weighted component, so that OUT/spec.toml loads with no converter.",
    )
    convert.add_argument("path", help="a diffusers pipeline folder, an SD 1.x .safetensors file or a spec file")
    convert.add_argument("--out", required=True,
                         help="output folder (created; an existing non-empty folder only with --overwrite)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output folder whole")
    convert.add_argument("--set", action="append", default=[], metavar="TABLE.FIELD=VALUE", help="override a value")
    convert.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    spec_path = convert(args.path, args.out, args.set, overwrite=args.overwrite)
    print(f"wrote {spec_path}")
    return 0


def convert(
    path: str | Path, out: str | Path, overrides: list[str] | dict[str, Any] | None = None,
    registry: Registry | None = None, overwrite: bool = False,
) -> Path:
    """Write ``path`` (anything ``load_pipeline`` accepts) to the folder ``out``; return the spec path.

    Everything is checked and loaded before anything is written; the folder is written beside
    ``out`` and renamed into place, so a failure leaves no half-converted folder and an existing
    ``out`` (replaced only with ``overwrite``) stays whole until the new one is complete.
    """
    out = Path(out)
    check_output_folder(Path(path), out, overwrite)
    pipe = Pipeline.load(path, overrides, registry)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write(pipe, staging)
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the output is an ordinary folder
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out / SPEC_NAME


def check_output_folder(source: Path, out: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, lies inside the source folder, or would replace a
    non-empty folder without ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out}: exists and is not a folder")
    if source.is_dir() and out.resolve().is_relative_to(source.resolve()):
        raise SpecError(f"--out {out}: is inside the checkpoint folder {source}; write the conversion elsewhere")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a conversion" if (out / SPEC_NAME).exists() else "files"
        raise SpecError(f"--out {out}: already holds {what}; pass --overwrite to replace the folder whole")


def _write(pipe: Pipeline, out: Path) -> None:
    """The spec, one safetensors file per weighted component and the other files its ``SpecPath``
    fields name, into the folder ``out``."""
    spec = pipe.spec.to_dict()  # built components wrote what they resolved (e.g. an architecture) back
    resaved: set[tuple[str, str]] = set()  # the locations of weights written as safetensors above
    for table, component in pipe.components.items():
        fields = spec.get(table)
        if not isinstance(fields, dict):
            continue
        has_weights_field = "weights" in type(component.spec).model_fields
        if has_weights_field and isinstance(component, nn.Module) and component.state_dict():
            fields["weights"] = save_component(component, out / f"{table}.safetensors").name
            resaved.add((table, "weights"))
            for name in _inexpressible_fields(component.spec):
                del fields[name]  # TOML has no null: the weights file's recorded spec keeps the value
    for location, path in local_spec_paths(type(pipe.spec), spec, pipe.registry):
        if location not in resaved and location[0] not in TRAINING_TABLES and Path(path).exists():
            set_at(spec, location, _carry(Path(path), out / f"{field_name(location)}{Path(path).suffix}").name)
    (out / SPEC_NAME).write_text(tomli_w.dumps(spec), encoding="utf-8")


def _inexpressible_fields(spec: Any) -> list[str]:
    """Fields whose value holds a None inside a table or list (``architecture.logit_bias_init = None``):
    TOML cannot write them, and dropping only the None would change the value to its default."""

    def has_none(value: Any) -> bool:
        if isinstance(value, dict):
            return any(v is None or has_none(v) for v in value.values())
        if isinstance(value, list):
            return any(v is None or has_none(v) for v in value)
        return False

    return [name for name, value in spec.model_dump(mode="json").items() if has_none(value)]


def _carry(source: Path, target: Path) -> Path:
    """Copy a file or folder to ``target``, replacing what is there."""
    if source.resolve() == target.resolve():
        return target
    if target.is_dir():
        shutil.rmtree(target)
    if source.is_dir():
        shutil.copytree(source, target)
    elif source.is_file():
        shutil.copyfile(source, target)
    else:
        raise SpecError(f"{source} is neither a file nor a folder")
    return target
