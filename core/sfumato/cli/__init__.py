"""The ``sfumato`` command line. Plugins add sub-commands through the ``register_commands`` hook."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .._version import __version__
from ..errors import SfumatoError
from ..registry import Registry, set_registry
from ..serve import command as serve_command
from . import convert_command, generate_command, plugin_commands, spec_commands, train_command


def build_parser(registry: Registry) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfumato", description="Diffusion models and CLIP, assembled from plugins and spec files."
    )
    parser.add_argument("--version", action="version", version=f"sfumato {__version__}")
    parser.add_argument("--registry", metavar="FILE",
                        help="a local registry.toml to load (or SFUMATO_REGISTRY=FILE); none is loaded unless named")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    generate_command.add(sub)
    plugin_commands.add(sub)
    spec_commands.add(sub)
    train_command.add(sub)
    convert_command.add(sub)
    serve_command.add(sub)  # the same generation behind HTTP (sfumato.serve; fastapi is imported on use)
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
    """Entry point of the ``sfumato`` console script; returns the exit code.

    Exit codes: 0 success, 2 bad input (one ``sfumato: error:`` line naming what was wrong and
    where), 1 an internal error of sfumato itself, 130 interrupted. ``SFUMATO_DEBUG=1`` re-raises
    instead, for the full traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    registry: Registry | None = None
    try:
        local = _registry_path(argv)
        registry = Registry(local=local if local is not None else "auto")
        set_registry(registry)
        parser = build_parser(registry)
        args = parser.parse_args(argv)
        if getattr(args, "handler", None) is None:
            parser.print_help()
            return 0
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place every failure becomes a message
        if os.environ.get("SFUMATO_DEBUG"):
            raise
        message, code = describe_failure(exc, registry)
        print(f"sfumato: error: {message}", file=sys.stderr)
        return code


def describe_failure(exc: BaseException, registry: Registry | None) -> tuple[str, int]:
    """The one-line message and exit code for an exception that reached the command line.

    Errors raised on purpose (``SfumatoError``) and the failures of the environment that bad
    input causes (files, encodings, recursion, floating point) exit 2. Anything else raised inside
    a plugin's code exits 2 naming the plugin; anything else is a bug of sfumato's (exit 1).
    """
    if isinstance(exc, SfumatoError):
        return str(exc), 2
    plugin = plugin_in_traceback(exc, registry)
    inside = f" (raised inside plugin {plugin!r}; `sfumato plugins` shows where it comes from)" if plugin else ""
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not valid UTF-8 text ({exc.reason} at byte {exc.start}){inside}", 2
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}{inside}", 2
    if isinstance(exc, RecursionError):
        return f"input nested too deeply to process ({exc}){inside}", 2
    if isinstance(exc, FloatingPointError):
        return f"a computation produced non-finite values ({exc}){inside}", 2
    if isinstance(exc, MemoryError):
        return f"out of memory{inside}; ask for fewer or smaller images", 2
    detail = f"{type(exc).__name__}: {exc}"
    if plugin:
        return f"plugin {plugin!r} failed: {detail}", 2
    return (f"internal error: {detail}. This is a bug in sfumato; please report it with the command line "
            "(SFUMATO_DEBUG=1 shows the traceback)"), 1


def plugin_in_traceback(exc: BaseException, registry: Registry | None) -> str | None:
    """The plugin whose code raised ``exc``: the innermost traceback frame inside a plugin module."""
    if registry is None:
        return None
    found = None
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        plugin = registry.plugin_of_module(name) if name else None
        if plugin is not None:
            found = plugin
        tb = tb.tb_next
    return found
