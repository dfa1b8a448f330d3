"""``sfumato generate --prompts FILE --out DIR --ray ADDRESS``: the batches of ``sfumato.batch``
on a Ray cluster (the ``ray`` extra).

The command plans on the machine it runs on, exactly as without Ray (every line checked, the same
batches, the same resume), then hands the pending batches to a pool of ``BatchWorker`` actors
(``--ray-workers``, ``--ray-gpus`` each), each holding the pipeline on its own device. A worker
writes its batch's images into DIR, which must be a folder every node sees (a shared file
system), and returns their manifest entries; the command appends them as batches finish, so a
run stopped anywhere resumes like any other. A line's bytes are the same as in a one-process run
with one thread (Ray's workers run one thread each).

Workers rebuild the pipeline from the resolved spec (paths made absolute); local plugins reach
them through ``SFUMATO_REGISTRY``, which the command passes on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from ray.util import ActorPool

from .batch import (
    MANIFEST, BatchSummary, PlannedLine, append_entries, drop_torn_line, make_batch, merge_manifests, pending_batches,
    progress_bar,
)
from .generation_requests import SampleRunner
from .outputs import make_lock
from .pipeline import Pipeline


@ray.remote
class BatchWorker:
    """One Ray actor: the pipeline, loaded once, and the batches it is given."""

    def __init__(self, spec: dict[str, Any]):
        self.runner = SampleRunner(Pipeline.load(spec))

    def run(self, batch: list[PlannedLine], pending: set[int], folder: str) -> list[dict[str, Any]]:
        return make_batch(self.runner, batch, pending, Path(folder))


def run_batches_on_ray(runner: SampleRunner, planned: list[PlannedLine], folder: Path, *, address: str,
                       workers: int, gpus: float, batch_size: int, overwrite: bool,
                       progress: bool = True) -> BatchSummary:
    """Make the pending lines on ``workers`` Ray actors of the cluster at ``address`` (``auto``
    for the one ``ray start`` runs here, ``local`` for a new one, ``ray://host:10001``)."""
    batches, pending = pending_batches(planned, folder, batch_size, overwrite)
    env = {name: os.environ[name] for name in ("SFUMATO_REGISTRY", "SFUMATO_DISABLE_PLUGINS") if name in os.environ}
    if "SFUMATO_REGISTRY" in env:
        env["SFUMATO_REGISTRY"] = str(Path(env["SFUMATO_REGISTRY"]).absolute())
    ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=False)
    try:
        spec = make_lock(runner.pipe, {})["spec"]  # the resolved spec, paths absolute
        actors = [BatchWorker.options(num_gpus=gpus).remote(spec) for _ in range(min(workers, len(batches)) or 1)]
        manifest = folder / MANIFEST
        drop_torn_line(manifest)
        written = 0
        total = sum(line.number in pending for batch in batches for line in batch)
        with progress_bar(total, progress, f" on {len(actors)} Ray worker(s)") as bar:
            results = ActorPool(actors).map_unordered(
                lambda actor, batch: actor.run.remote(batch, pending, str(folder.absolute())), batches)
            for entries in results:
                append_entries(manifest, entries)
                written += len(entries)
                bar.update(len(entries))
    finally:
        ray.shutdown()
    folder.mkdir(parents=True, exist_ok=True)
    merge_manifests(folder)
    return BatchSummary(written=written, skipped=len(planned) - len(pending), manifest=folder / MANIFEST)
