"""The ``sfumato`` command line. Plugins add sub-commands through the ``register_commands`` hook."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .._version import __version__
from ..errors import SfumatoError
from ..registry import Registry, set_registry
from . import convert_command, generate_command, plugin_commands, spec_commands, train_command


def build_parser(registry: Registry) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfumato", description="Diffusion models and CLIP, assembled from plugins and spec files."
    )
    parser.add_argument("--version", action="version", version=f"sfumato {__version__}")
    parser.add_argument("--registry", metavar="FILE", help="a local registry.toml (default: ./registry.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    generate_command.add(sub)
    plugin_commands.add(sub)
    spec_commands.add(sub)
    train_command.add(sub)
    convert_command.add(sub)
    registry.commands(sub)
    evaluate = sub.add_parser("eval", help="evaluations registered by plugins (geneval, zero-shot, ...)")
    evaluations = evaluate.add_subparsers(dest="evaluation", metavar="EVALUATION")
    evaluate.set_defaults(handler=lambda args: evaluate.print_help())
    registry.commands(evaluations, hook="register_eval_commands")
    return parser


def _registry_path(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--registry" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--registry="):
            return arg.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sfumato`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        local = _registry_path(argv)
        registry = Registry(local=local if local is not None else "auto")
    except SfumatoError as exc:
        print(f"sfumato: error: {exc}", file=sys.stderr)
        return 2
    set_registry(registry)
    parser = build_parser(registry)
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    try:
        code = args.handler(args)
    except SfumatoError as exc:
        print(f"sfumato: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code or 0)
