"""``sfumato convert``: a checkpoint any plugin understands, written as a sfumato spec.

The output folder holds ``spec.toml`` (every field resolved, weights paths relative to it), one
safetensors file per weighted component (``sfumato.save_component``: sfumato's key names, the
component's spec in the metadata) and copies of the other files a component reads, such as a
text encoder's tokenizer. ``load_pipeline(out / "spec.toml")`` rebuilds exactly the same
pipeline, with no converter in the loop.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import tomli_w
from torch import nn

from ..errors import SpecError
from ..pipeline import Pipeline
from ..registry import Registry
from ..weights import save_component

SPEC_NAME = "spec.toml"
#: Component fields naming a file or folder, other than ``weights``, that the output must carry.
CARRIED_FIELDS = ("tokenizer",)


def add(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser(
        "convert", help="write a checkpoint (diffusers folder, SD 1.x single file, spec) as a sfumato spec + safetensors",
        description="Load PATH as `sfumato.load_pipeline` does and write OUT/spec.toml with one safetensors "
        "file per weighted component, so that OUT/spec.toml loads with no converter.",
    )
    convert.add_argument("path", help="a diffusers pipeline folder, an SD 1.x .safetensors file or a spec file")
    convert.add_argument("--out", required=True, help="output folder (created; existing files are replaced)")
    convert.add_argument("--set", action="append", default=[], metavar="TABLE.FIELD=VALUE", help="override a value")
    convert.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    spec_path = convert(args.path, args.out, args.set)
    print(f"wrote {spec_path}")
    return 0


def convert(
    path: str | Path, out: str | Path, overrides: list[str] | dict[str, Any] | None = None,
    registry: Registry | None = None,
) -> Path:
    """Write ``path`` (anything ``load_pipeline`` accepts) to the folder ``out``; return the spec path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline.load(path, overrides, registry)
    spec = pipe.spec.to_dict()  # built components wrote what they resolved (e.g. an architecture) back
    for table, component in pipe.components.items():
        fields = spec.get(table)
        if not isinstance(fields, dict):
            continue
        has_weights_field = "weights" in type(component.spec).model_fields
        if has_weights_field and isinstance(component, nn.Module) and component.state_dict():
            fields["weights"] = save_component(component, out / f"{table}.safetensors").name
            for name in _inexpressible_fields(component.spec):
                del fields[name]  # TOML has no null: the weights file's recorded spec keeps the value
        for name in CARRIED_FIELDS:
            value = fields.get(name)
            if isinstance(value, str) and Path(value).exists():
                fields[name] = _carry(Path(value), out / f"{table}.{name}{Path(value).suffix}").name
    spec_path = out / SPEC_NAME
    spec_path.write_text(tomli_w.dumps(spec), encoding="utf-8")
    return spec_path


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
