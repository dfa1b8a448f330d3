"""``sfumato train SPEC``: run a spec's ``train-*`` task (under ``torchrun`` for several processes)."""

from __future__ import annotations

import argparse

from ..registry import get_registry
from ..specs import load_spec
from ..training import train


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train", help="train the models of a spec's train-* task",
        description="Train with a spec whose task is train-clip, train-diffusion, ... (see docs/training.md). "
        "For data parallelism launch it with torchrun: torchrun --nproc-per-node 2 -m sfumato train SPEC",
    )
    parser.add_argument("spec", help="a training spec file (TOML or JSON)")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.FIELD=VALUE", help="override a spec value")
    parser.add_argument("--out", help="output folder (default: the spec's [train] out)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the output "
                        "folder (start afresh if it holds no run)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an output folder that holds another run, deleting that run's outputs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, get_registry(), args.set or None)
    result = train(spec, out=args.out, resume=args.resume, overwrite=args.overwrite,
                   progress=False if args.no_progress else None)
    if result.is_main:  # under torchrun, one summary
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""
        print(f"trained {result.steps} steps{resumed}; weights in {result.out}: "
              + ", ".join(path.name for path in result.weights.values()))
    return 0
