"""``sfumato plugins``: what is installed, where it came from, and what failed."""

from __future__ import annotations

import argparse
import json

from ..registry import get_registry


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plugins", help="list plugins, their versions, sources and components")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per plugin")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    plugins = get_registry().plugins()
    if args.json:
        print(json.dumps([p.to_json() for p in plugins], indent=2))
        return 0
    for plugin in plugins:
        version = plugin.version or "-"
        print(f"{plugin.name} {version} ({plugin.source}, {plugin.module}) {plugin.status}")
        if plugin.error:
            print(f"    error: {plugin.error}")
        for kind, names in sorted(plugin.provides.items()):
            print(f"    {kind}: {', '.join(names)}")
    return 0
