"""``sfumato schema``, ``fill`` and ``validate``: working with spec files."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import tomli_w

from ..errors import SfumatoError, SpecError
from ..registry import get_registry
from ..specs import component_union, load_spec, spec_json_schema
from ..interfaces import KINDS
from ..weights import atomic_write


def add(sub: argparse._SubParsersAction) -> None:
    schema = sub.add_parser("schema", help="print the JSON Schema of spec files (plugin fields included)")
    schema.add_argument("--kind", metavar="KIND", help="only the schema of one component kind (the core's: "
                        f"{', '.join(sorted(KINDS))}; or one a plugin declares, such as controlnet)")
    schema.set_defaults(handler=run_schema)

    fill = sub.add_parser("fill", help="write a spec with every default filled in")
    fill.add_argument("spec", help="spec file (TOML or JSON)")
    fill.add_argument("--out", help="write here instead of standard output")
    fill.add_argument("--set", action="append", default=[], metavar="TABLE.FIELD=VALUE", help="override a value")
    fill.set_defaults(handler=run_fill)

    validate = sub.add_parser("validate", help="check a spec file; exit 0 if valid, 2 with the problems if not")
    validate.add_argument("spec", help="spec file (TOML or JSON)")
    validate.add_argument("--set", action="append", default=[], metavar="TABLE.FIELD=VALUE", help="override a value")
    validate.set_defaults(handler=run_validate)


def run_schema(args: argparse.Namespace) -> int:
    registry = get_registry()
    if args.kind:
        from pydantic import TypeAdapter

        if args.kind not in registry.components:
            raise SpecError(f"--kind {args.kind!r} is not a component kind; the kinds are "
                            f"{', '.join(sorted(registry.components))}")
        union = component_union(registry, args.kind)
        if union is None:
            raise SpecError(f"no {args.kind} types are registered")
        schema = TypeAdapter(union).json_schema()
    else:
        schema = spec_json_schema(registry)
    print(json.dumps(schema, indent=2))
    return 0


def run_fill(args: argparse.Namespace) -> int:
    if args.out:
        check_out(args.out)
    spec = load_spec(args.spec, get_registry(), args.set)
    text = tomli_w.dumps(spec.to_dict())
    if args.out:
        try:
            atomic_write(args.out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        except OSError as exc:
            if isinstance(exc, SfumatoError):  # a full disk, said in its own words
                raise
            raise SpecError(f"--out {args.out}: cannot write it: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(text)
    return 0


def check_out(out: str) -> None:
    """Refuse a ``--out`` that names a folder or lies under a file, before any work."""
    if out.endswith(("/", os.sep)) or Path(out).is_dir():
        raise SpecError(f"--out {out} names a folder; give a file name, such as {Path(out) / 'spec.toml'}")
    folder = Path(out).absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise SpecError(f"--out {out}: {folder} is a file, not a folder")


def run_validate(args: argparse.Namespace) -> int:
    load_spec(args.spec, get_registry(), args.set)
    print(f"{args.spec}: valid")
    return 0
