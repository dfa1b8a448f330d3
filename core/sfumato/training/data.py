"""Feeding the trainer: a sampler that can start mid-epoch, items seeded by their key, collation.

Every item is fetched under a torch seed derived from ``(seed, epoch, index)`` alone, and the
training noise of a sample is drawn the same way (``SampleRandom``). What a sample sees therefore
depends on neither the worker that loaded it, the process that trained on it, nor whether the run
was resumed, which is what makes ``--resume`` bitwise exact and N processes equal to one.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..errors import SfumatoError
from .randomness import derive_seed


def collate_examples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``image`` -> ``[B, 3, H, W]``, ``label`` and ``index`` -> ``[B]`` int64; every other key ->
    a list of length B. Keys missing from some items are dropped from the batch."""
    keys = [key for key in items[0] if all(key in item for item in items)]
    batch: dict[str, Any] = {}
    for key in keys:
        values = [item[key] for item in items]
        if key == "image":
            batch[key] = torch.stack(values)
        elif key in ("label", "index", "epoch"):
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:
            batch[key] = values
    return batch


def label_table_error(exc: BaseException, table: str, type_name: str | None) -> BaseException:
    """Prefix an error's message with the spec table it came from, keeping its type and text."""
    prefix = f"[{table}]" + (f" type {type_name!r}" if type_name else "")
    if exc.args and isinstance(exc.args[0], str) and not exc.args[0].startswith(f"[{table}]"):
        exc.args = (f"{prefix}: {exc.args[0]}", *exc.args[1:])
    return exc


class KeyedDataset(torch.utils.data.Dataset):
    """Wraps a dataset whose keys are ``(epoch, index)``: item ``index`` is fetched with torch's
    generator seeded from ``(seed, epoch, index)`` (random crops, flips and caption choices are
    then a function of the key), and gets ``index`` and ``epoch`` fields."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int, table: str = "dataset"):
        self.dataset, self.seed, self.table = dataset, seed, table

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "item", epoch, index))
            try:
                item = dict(self.dataset[index])
            except SfumatoError as exc:
                raise label_table_error(exc, self.table, getattr(getattr(self.dataset, "spec", None), "type", None))
        item["index"], item["epoch"] = index, epoch
        return item


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (seeded shuffle, one shard per process, ``drop_last``) that yields
    ``(epoch, index)`` keys and can start ``start`` items into its shard (resuming mid-epoch)."""

    def __init__(self, dataset: torch.utils.data.Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start:]
        return iter([(self.epoch, index) for index in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


def make_loader(dataset: KeyedDataset, sampler: ResumableSampler, micro_batch: int, num_workers: int) -> DataLoader:
    """A loader over ``sampler``'s keys. It gets its own generator: a DataLoader otherwise draws its
    workers' base seed from torch's global generator each time it starts an epoch, and a resumed
    run, which starts one mid-epoch, would then see different dropout masks from then on."""
    generator = torch.Generator().manual_seed(derive_seed(dataset.seed, "loader", sampler.epoch, sampler.start))
    return DataLoader(
        dataset, batch_size=micro_batch, sampler=sampler, num_workers=num_workers, generator=generator,
        collate_fn=collate_examples, drop_last=True, persistent_workers=False,
    )
