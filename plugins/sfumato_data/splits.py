"""Deterministic splits: the same names, fractions and seed always give the same partition."""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

from .files import DatasetError

T = TypeVar("T")


def split_items(items: Sequence[T], fractions: dict[str, float], split: str, seed: int, source: str = "") -> list[T]:
    """The part ``split`` of ``items`` after a seeded shuffle, cut in the order of ``fractions``.

    ``fractions`` maps split names to fractions summing to at most 1 (for example
    ``{"test": 0.1, "val": 0.1, "train": 0.8}``); the last split takes the remainder so no item is
    lost to rounding. Sort ``items`` first when they come from a directory listing, so the split
    does not depend on the file system's order. A split that would be empty raises
    ``DatasetError`` (prefixed with ``source``, the dataset's folder; the remedy names the spec
    field ``<split>_fraction``, as the datasets here call it), as nothing could train or evaluate
    on it.
    """
    if split not in fractions:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(fractions)}")
    order = np.random.default_rng(seed).permutation(len(items))
    names = list(fractions)
    start = 0
    for position, name in enumerate(names):
        last = position == len(names) - 1
        stop = len(items) if last else start + round(fractions[name] * len(items))
        if name == split:
            if stop <= start:
                remedy = "lower the other splits' fractions" if last else f"raise {split}_fraction"
                raise DatasetError(f"{source + ': ' if source else ''}the {split!r} split of {len(items)} item(s) "
                                   f"is empty (its share rounds to none); add items or {remedy}")
            return [items[i] for i in sorted(order[start:stop])]
        start = stop
    raise AssertionError("unreachable")
