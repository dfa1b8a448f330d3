"""The output folder of a training run: one run per folder, one process at a time.

A fresh run refuses a folder that holds another run's checkpoints or metrics, since it would
truncate that run's ``metrics.jsonl`` and its checkpoint rotation would mix the two runs;
``overwrite`` deletes the other run's outputs first. While it trains, a run holds an exclusive
``flock`` on ``out/.train.lock``, so a second run into the same folder stops at once instead of
interleaving its files with the first. Temporary files of checkpoint writes killed mid-way are
deleted under that lock, when no writer can be running.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import IO, Iterable, Iterator

from ..errors import SfumatoError
from ..weights import remove_stale_temporaries
from .checkpoint import CHECKPOINT_DIR, list_checkpoints
from .distributed import DistributedContext, from_main
from .metrics import LOSS_PLOT, METRICS_FILE

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected from each other there
    fcntl = None

LOCK_FILE = ".train.lock"
TRAINED_SPEC = "trained.toml"
#: What a run writes besides its weights (``<module>.safetensors``) and checkpoints.
RUN_FILES = (METRICS_FILE, LOSS_PLOT, TRAINED_SPEC)
RUN_FOLDERS = ("samples", "tensorboard")
_EPOCH_FOLDER = re.compile(r"^epoch-\d+$")


class RunFolderError(SfumatoError):
    """The output folder holds another run, is not a usable folder, or another process trains into it."""


def earlier_run(out: Path) -> list[str]:
    """What ``out`` holds of an earlier run (its checkpoints, its metrics), worded for a message;
    empty when it holds none."""
    found = []
    checkpoints = list_checkpoints(out)
    if checkpoints:
        found.append(f"{len(checkpoints)} checkpoint(s) up to step {checkpoints[-1][0]}")
    metrics = out / METRICS_FILE
    if metrics.is_file() and metrics.stat().st_size:
        found.append(METRICS_FILE)
    return found


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a run that would mix its files with another run's in ``out`` (reads only).

    A fresh run needs a folder without checkpoints or metrics (or ``overwrite``); a resumed one a
    folder that is empty or has a checkpoint to resume from.
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: --resume continues the run in "
                             f"{out}, --overwrite deletes it; choose one")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder; choose a folder for the run's outputs")
    if overwrite or not out.is_dir():
        return
    found = earlier_run(out)
    if not found:
        return
    if not resume:
        raise RunFolderError(f"{out} holds another run ({', '.join(found)}); pass --resume to continue it, or "
                             "--overwrite to delete it and start afresh (resume=True / overwrite=True in Python), "
                             "or choose another --out")
    if not list_checkpoints(out):
        raise RunFolderError(f"{out} holds a run ({', '.join(found)}) with no checkpoint to resume from; pass "
                             "--overwrite (without --resume) to delete it and start afresh, or choose another --out")


class RunLock:
    """An exclusive ``flock`` on ``out/.train.lock``, from ``acquire`` to ``release``.

    The lock file stays behind (deleting it would let a run that opened it just before lock a file
    no one else sees); it holds the process id of the run holding it, for the message.
    """

    def __init__(self, out: Path):
        self.out = out
        self.path = out / LOCK_FILE
        self.file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock (creating the folder), or raise ``RunFolderError`` naming the holder."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a+")
        except OSError as exc:
            raise RunFolderError(f"cannot use {self.out} as the output folder: {exc.strerror or exc}") from exc
        if fcntl is None:
            return
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise RunFolderError(f"{self.out}: another training run holds this folder (process {holder}, lock "
                                 f"{self.path}); wait for it to finish, or choose another --out") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()

    def release(self) -> None:
        """Release the lock (nothing to do when it was never taken)."""
        if self.file is not None and not self.file.closed:
            if fcntl is not None:
                fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


@contextlib.contextmanager
def claim_run_folder(out: Path, resume: bool, overwrite: bool, context: DistributedContext) -> Iterator[None]:
    """Hold ``out``'s lock on the main process while the block runs, after checking the folder
    again under it (another run may have started since the first check). Every process learns the
    outcome, so a refusal stops all of them with the same message instead of leaving the others
    waiting for the main process."""
    lock = RunLock(out)
    refusal = None
    if context.is_main:
        try:
            lock.acquire()
            check_run_folder(out, resume, overwrite)
        except RunFolderError as exc:
            lock.release()
            refusal = str(exc)
    refusal = from_main(refusal, context)
    if refusal is not None:
        raise RunFolderError(refusal)
    try:
        yield
    finally:
        lock.release()


def remove_interrupted_writes(out: Path) -> None:
    """Delete the temporary files of writes killed mid-way (checkpoints can be hundreds of MB
    each), with a warning saying how much was freed. Call it holding the run's lock."""
    stale = {**remove_stale_temporaries(out), **remove_stale_temporaries(out / CHECKPOINT_DIR)}
    if stale:
        warnings.warn(f"{out}: removed {len(stale)} temporary file(s) ({sum(stale.values()) / 1e6:.1f} MB) left "
                      "by writes that were killed mid-way", stacklevel=2)


def remove_run_outputs(out: Path, module_names: Iterable[str], output_files: Iterable[str] = ()) -> None:
    """Delete what an earlier run wrote to ``out`` (``overwrite``): its checkpoints, metrics, loss
    plot, samples, TensorBoard events, per-epoch weights, ``trained.toml``, the weights
    ``<name>.safetensors`` / ``<name>.no-ema.safetensors`` of ``module_names`` and the recipe's
    ``output_files`` (``{suffix}``: ``""`` and ``".no-ema"``). Other files stay."""
    for pattern in output_files:
        for suffix in ("", ".no-ema"):
            (out / pattern.format(suffix=suffix)).unlink(missing_ok=True)
    for _, path in list_checkpoints(out):
        path.unlink(missing_ok=True)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in module_names:
        for suffix in ("", ".no-ema"):
            (out / f"{name}{suffix}.safetensors").unlink(missing_ok=True)
    folders = [out / name for name in RUN_FOLDERS] + [p for p in out.iterdir() if _EPOCH_FOLDER.match(p.name)]
    for folder in folders:
        if folder.is_dir():
            shutil.rmtree(folder)
