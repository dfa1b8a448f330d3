"""``sfumato plugins``: what is installed, where it came from, and what failed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import PluginError
from ..local_plugins import REGISTRY_ENV
from ..registry import PACKAGED_REGISTRY, Registry, get_registry


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plugins", help="list plugins, their versions, sources and components")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per plugin")
    parser.add_argument("--check", action="store_true",
                        help="exit 2, listing them on stderr, when any plugin failed (for CI)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    registry = get_registry()
    plugins = registry.plugins()
    unused = unused_local_registry(registry)
    if unused is not None:
        print(f"sfumato: note: {unused} is not loaded: local plugins run code, so they are opt-in; "
              f"load it with `sfumato --registry {unused} ...` or {REGISTRY_ENV}={unused}", file=sys.stderr)
    if args.json:
        print(json.dumps([p.to_json() for p in plugins], indent=2))
    else:
        for plugin in plugins:
            version = plugin.version or "-"
            print(f"{plugin.name} {version} ({plugin.source}, {plugin.module}) {plugin.status}")
            if plugin.error:
                print(f"    error: {plugin.error}")
            for kind, names in sorted(plugin.provides.items()):
                print(f"    {kind}: {', '.join(names)}")
    failed = registry.failed()
    if args.check and failed:
        listing = "\n".join(f"  - {p.name} ({p.source}, {p.module}): {p.error}" for p in failed)
        raise PluginError(f"{len(failed)} plugin{'s' if len(failed) > 1 else ''} failed to load:\n{listing}")
    return 0


def unused_local_registry(registry: Registry) -> Path | None:
    """``registry.toml`` when the working directory has one that this run did not load."""
    candidate = Path("registry.toml")
    if not candidate.is_file():
        return None
    loaded = {PACKAGED_REGISTRY.resolve()} | ({registry.local_path.resolve()} if registry.local_path else set())
    return None if candidate.resolve() in loaded else candidate
