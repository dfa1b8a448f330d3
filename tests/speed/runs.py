"""Running the built-in pipelines with speedups, and counting host synchronisations."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode

import sfumato


@contextmanager
def speedups(pipe: sfumato.Pipeline, *tables: dict):
    """``pipe`` with these ``[[speedups]]`` for the block (the pipeline is shared by the tests)."""
    before = pipe.speedups
    pipe.speedups = [sfumato.build("speedup", table) for table in tables]
    try:
        yield pipe
    finally:
        pipe.speedups = before


def generate(pipe: sfumato.Pipeline, *tables: dict, steps: int = 8, seed: int = 3) -> torch.Tensor:
    """The decoded images ``[B, 3, H, W]`` of a short run with these speedups."""
    arguments = dict(prompt="a red circle") if pipe.component("text_encoder") is not None else dict(labels=[3, 7])
    with speedups(pipe, *tables):
        return pipe(**arguments, steps=steps, seed=seed, progress=False).decoded


#: Tensor methods that make the host wait for the device.
SYNCHRONISING = {"item", "__bool__", "tolist", "cpu", "numpy", "__int__", "__float__", "nonzero"}


class HostSyncs(TorchFunctionMode):
    """Counts the synchronising tensor operations called while it is active (on any device:
    the CPU has no sync debug mode, so the calls that would synchronise are counted)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in SYNCHRONISING:
            self.count += 1
        return func(*args, **(kwargs or {}))


def host_syncs(call) -> int:
    with HostSyncs() as mode:
        call()
    return mode.count
