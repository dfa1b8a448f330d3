"""What the ``sfumato eval`` commands share: argument types, choosing the model, printing the
table, writing the JSON."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import sfumato


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model NAME | --spec FILE``, ``--set``, ``--seed``, ``--out``, ``--no-progress``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a built-in model name (see `sfumato models`)")
    source.add_argument("--spec", metavar="FILE", help="a pipeline spec file")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.FIELD=VALUE", help="override a spec value")
    parser.add_argument("--seed", type=first_seed, default=0, help="seed of the first generation (default 0)")
    parser.add_argument("--out", type=results_file, metavar="RESULTS.json", help="write the figures as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


#: The largest first seed: later generations add their index to it, and seeds stay below 2**64.
MAX_SEED = 2**63 - 1


def first_seed(text: str) -> int:
    """An ``argparse`` type: a first seed in 0..2**63 - 1."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must lie in 0..{MAX_SEED} (later generations add their index), got {value}")
    return value


def results_file(text: str) -> str:
    """An ``argparse`` type: a file to write the results to, refused up front when it is a
    directory (the evaluation would otherwise run to the end and then fail)."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name such as {text.rstrip('/')}/results.json")
    return text


def load_model(args: argparse.Namespace) -> sfumato.Pipeline:
    """The pipeline that ``--model`` or ``--spec`` (with ``--set``) names."""
    target = args.spec if args.spec else sfumato.get_registry().model(args.model).spec_path
    return sfumato.load_pipeline(target, overrides=args.set or None)


def model_name(args: argparse.Namespace) -> str:
    return args.model or str(args.spec)


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table; floats with three decimals, columns after the first right-aligned."""
    cells = [[f"{v:.3f}" if isinstance(v, float) and not math.isnan(v) else str(v) for v in row]
             for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_figures(title: str, figures: dict[str, Any]) -> None:
    """``title``, then one ``name  value`` line per figure (floats with three decimals)."""
    width = max(len(name) for name in figures)
    print(title)
    for name, value in figures.items():
        print(f"  {name:<{width}}  {value:.3f}" if isinstance(value, float) else f"  {name:<{width}}  {value}")


def write_json(path: str | Path, report: dict[str, Any]) -> Path:
    path = Path(path)
    sfumato.atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    print(f"wrote {path}")
    return path
