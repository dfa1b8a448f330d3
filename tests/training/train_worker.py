"""A training run in its own process, for the kill-and-resume tests.

``python train_worker.py SPEC.json OUT [--resume] [--kill-at STEP] [--kill-in-checkpoint STEP]``

``--kill-at`` sends the process SIGKILL right after optimiser step STEP; ``--kill-in-checkpoint``
writes half of step STEP's checkpoint to its temporary file and then sends SIGKILL, as a crash in
the middle of the write would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch

import sfumato
from sfumato.specs import load_spec
from sfumato.training import checkpoint


class KillAt(sfumato.TrainCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, step: int) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def kill_inside_checkpoint_write(step: int) -> None:
    real_save = torch.save

    def half_then_die(state, path):
        real_save(state, path)
        if state.get("step") == step:
            size = Path(path).stat().st_size
            with open(path, "r+b") as f:
                f.truncate(size // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.torch.save = half_then_die


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--kill-in-checkpoint", type=int)
    args = parser.parse_args()
    callbacks = [KillAt(args.kill_at)] if args.kill_at else []
    if args.kill_in_checkpoint:
        kill_inside_checkpoint_write(args.kill_in_checkpoint)
    spec = load_spec(json.loads(Path(args.spec).read_text()), sfumato.get_registry())
    sfumato.train(spec, out=args.out, resume=args.resume, callbacks=callbacks, progress=False)


if __name__ == "__main__":
    main()
