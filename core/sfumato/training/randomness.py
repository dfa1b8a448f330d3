"""Reproducible randomness for training: per-sample noise keyed by the sample, and RNG snapshots.

``SampleRandom`` draws each sample's noise from a generator seeded by ``(seed, epoch, index,
draw)``: the numbers a sample gets do not depend on how the batch was split over processes or
micro-batches, nor on what ran before. Noise is drawn on the CPU and moved, as at sampling time.
"""

from __future__ import annotations

import hashlib
import random
import struct
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor


def derive_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit seed from ``seed``, a purpose tag and integer keys (stable across processes)."""
    payload = purpose.encode() + struct.pack(f"<{len(keys) + 1}q", seed, *keys)
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little") >> 1


class SampleRandom:
    """Random numbers for a batch, one independent stream per sample.

    :param seed: the run's seed. :param epochs: ``[B]`` each sample's epoch.
    :param indices: ``[B]`` each sample's dataset index. :param device: where tensors are returned.
    Each call is a new draw: calling ``randn`` twice gives different noise.
    """

    def __init__(self, seed: int, epochs: Sequence[int], indices: Sequence[int], device: torch.device | str = "cpu"):
        self.keys = [(int(e), int(i)) for e, i in zip(epochs, indices)]
        self.seed, self.device, self.draws = seed, torch.device(device), 0

    def __len__(self) -> int:
        return len(self.keys)

    def _generators(self) -> list[torch.Generator]:
        self.draws += 1
        return [torch.Generator().manual_seed(derive_seed(self.seed, "sample", e, i, self.draws)) for e, i in self.keys]

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """``[B, *shape]`` standard normal noise."""
        return torch.stack([torch.randn(shape, generator=g) for g in self._generators()]).to(self.device, dtype)

    def randn_like(self, x: Tensor) -> Tensor:
        return self.randn(*x.shape[1:], dtype=x.dtype)

    def rand(self) -> Tensor:
        """``[B]`` uniform numbers in [0, 1)."""
        return torch.cat([torch.rand(1, generator=g) for g in self._generators()]).to(self.device)

    def randint(self, low: int, high: int) -> Tensor:
        """``[B]`` integers in [low, high)."""
        return torch.cat([torch.randint(low, high, (1,), generator=g) for g in self._generators()]).to(self.device)


def rng_state() -> dict[str, Any]:
    """This process's torch (CPU and CUDA), numpy and python RNG states, as tensors and plain data
    (loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
