"""``sfumato schema``, ``fill`` and ``validate``: working with spec files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import tomli_w

from ..errors import SpecError
from ..registry import get_registry
from ..specs import component_union, load_spec, spec_json_schema
from ..interfaces import KINDS


def add(sub: argparse._SubParsersAction) -> None:
    schema = sub.add_parser("schema", help="print the JSON Schema of spec files (plugin fields included)")
    schema.add_argument("--kind", choices=sorted(KINDS), help="only the schema of one component kind")
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

        union = component_union(registry, args.kind)
        if union is None:
            raise SpecError(f"no {args.kind} types are registered")
        schema = TypeAdapter(union).json_schema()
    else:
        schema = spec_json_schema(registry)
    print(json.dumps(schema, indent=2))
    return 0


def run_fill(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, get_registry(), args.set)
    text = tomli_w.dumps(spec.to_dict())
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def run_validate(args: argparse.Namespace) -> int:
    load_spec(args.spec, get_registry(), args.set)
    print(f"{args.spec}: valid")
    return 0
