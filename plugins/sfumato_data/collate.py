"""Batching dataset items: images and labels stack, everything else stays a list per item.

``torch.utils.data.default_collate`` cannot batch ``attributes`` (dicts of lists whose lengths
differ between items) and transposes ``captions`` lists, so use ``collate_examples`` as the
``collate_fn`` of a ``DataLoader`` over any sfumato dataset.
"""

from __future__ import annotations

from typing import Any

import torch


def collate_examples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``image`` -> ``[B, 3, H, W]``, ``label`` -> ``[B]`` int64; every other key -> a list of
    length B. Keys missing from some items are dropped from the batch."""
    keys = [key for key in items[0] if all(key in item for item in items)]
    batch: dict[str, Any] = {}
    for key in keys:
        values = [item[key] for item in items]
        if key == "image":
            batch[key] = torch.stack(values)
        elif key == "label":
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:
            batch[key] = values
    return batch
