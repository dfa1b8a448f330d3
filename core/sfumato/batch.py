"""Batch generation: ``sfumato generate --prompts FILE --out DIR``, one image per line of a
prompt file plus a manifest; resumable, and sharded over the processes ``torchrun`` starts.

A prompt file is text (one prompt per non-blank line) or JSON Lines (``.jsonl``, ``.ndjson``:
one object per line with the fields of ``GenerationRequest``: ``prompt``, ``negative``,
``label``, ``seed``, ``steps``, ``height``, ``width``, ``guidance``, ``scheduler``). The command
line's options are every line's defaults; a line's own fields win. Every line is checked, against
the model too, before any work; an error names the file, the line and the field.

A line's seed is its own ``seed``, else the base seed (``--seed``, default 0) plus its line
number, so its noise never depends on other lines. Lines that can share a forward
(``Sample.batch_key``) are cut, in file order, into batches of ``--batch-size``: a batch is a
function of the file alone, so a line runs in the same batch at the same row whatever the number
of processes or the point a run resumed from, and its bytes are the same in every run on a
machine (the same device and threads per process; see ``sfumato.generation_requests``).

``DIR/manifest.jsonl`` holds one JSON object per finished line: ``line`` (its number, from 1),
``file``, ``seed`` and ``lock`` (the SHA-256 of its lock). A batch's images are written
atomically, then its manifest lines are appended in one write, so a killed run loses at most the
batches in flight; a rerun skips each line the manifest holds with the same lock and an existing
image. A line whose lock changed (another spec, weights, sfumato or line) is refused unless
``--overwrite`` asks to make it again.

Under ``torchrun`` rank r runs the pending batches r, r + N, ... and appends to
``manifest.rank-r.jsonl``; at the end rank 0 merges every manifest into ``manifest.jsonl`` in
line order (a one-process run rewrites it in line order too: both give the same file).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm.auto import tqdm

from .errors import SpecError
from .generation import MAX_OUTPUT_PIXELS, ArgumentError
from .generation_requests import GenerationRequest, Sample, SampleRunner, lock_sha256, validation_messages
from .outputs import save_image
from .training.distributed import DistributedContext, barrier, gather_objects
from .weights import atomic_write

MANIFEST = "manifest.jsonl"
#: The manifest one process of a ``torchrun`` run appends to (merged into ``MANIFEST`` at the end).
RANK_MANIFEST = "manifest.rank-{}.jsonl"
#: Extensions of JSON Lines prompt files; any other file is read as one prompt per line.
JSON_LINES = (".jsonl", ".ndjson")
#: Most lines a prompt file may hold.
MAX_LINES = 1_000_000
#: Problems listed in one error (the rest are counted).
MAX_LISTED = 10


@dataclass(frozen=True)
class PromptLine:
    """A line of a prompt file: its number (from 1) and its fields, as written."""

    number: int
    fields: dict[str, Any]


@dataclass(frozen=True)
class PlannedLine:
    """A line ready to run: its sample, the image file it makes and that image's lock."""

    number: int
    sample: Sample
    file: str
    lock: dict[str, Any]
    lock_sha256: str

    def manifest_entry(self) -> dict[str, Any]:
        return {"line": self.number, "file": self.file, "seed": self.sample.seed, "lock": self.lock_sha256}


def problems_error(where: str, problems: list[str]) -> SpecError:
    """One error listing at most ``MAX_LISTED`` problems (and how many more there are)."""
    listed = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return SpecError(f"{where}:\n  " + "\n  ".join(listed) + more if len(problems) > 1 else f"{where} {problems[0]}")


def read_prompt_file(path: str | Path) -> list[PromptLine]:
    """The lines of a prompt file: text (one prompt per non-blank line, surrounding whitespace
    removed) or JSON Lines (one object per non-blank line).

    :raises SpecError: naming the file and each line that is not UTF-8, not JSON or not an object.
    """
    path = Path(path)
    if not path.exists():
        raise SpecError(f"--prompts {path}: no such file")
    if not path.is_file():
        raise SpecError(f"--prompts {path}: not a file; give a text file (one prompt per line) or a .jsonl file")
    json_lines = path.suffix.lower() in JSON_LINES
    lines, problems = [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number > MAX_LINES:
                raise SpecError(f"--prompts {path}: more than {MAX_LINES:,} lines; split the file")
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                problems.append(f"line {number}: not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            if not text:
                continue
            if not json_lines:
                lines.append(PromptLine(number, {"prompt": text}))
                continue
            try:
                fields = json.loads(text)
            except (ValueError, RecursionError) as exc:
                problems.append(f"line {number}: not JSON ({str(exc)[:80]})")
                continue
            if not isinstance(fields, dict):
                problems.append(f"line {number}: a JSON object per line, such as {{\"prompt\": \"a red circle\"}}; "
                                f"found {type(fields).__name__}")
                continue
            lines.append(PromptLine(number, fields))
    if problems:
        raise problems_error(f"--prompts {path}", problems)
    if not lines:
        raise SpecError(f"--prompts {path}: holds no prompts (every line is blank)")
    return lines


def line_requests(lines: list[PromptLine], model: type[GenerationRequest], defaults: dict[str, Any],
                  path: str | Path) -> list[tuple[int, GenerationRequest]]:
    """Each line validated as a request, ``defaults`` (the command line's options) under its fields.

    :raises SpecError: listing every line and field that is wrong.
    """
    out, problems = [], []
    for line in lines:
        try:
            out.append((line.number, model.model_validate({**defaults, **line.fields})))
        except ValidationError as exc:
            problems += [f"line {line.number}: {message}" for message in validation_messages(exc)]
    if problems:
        raise problems_error(f"--prompts {path}", problems)
    return out


def plan_lines(runner: SampleRunner, requests: list[tuple[int, GenerationRequest]], base_seed: int,
               path: str | Path) -> list[PlannedLine]:
    """Every line's sample (its seed: its own, else ``base_seed`` + its number), checked against
    the model, with its file name and lock.

    :raises SpecError: listing every line the model refuses, naming the field.
    """
    planned, problems = [], []
    for number, request in requests:
        sample = runner.sample(request, seed=base_seed + number)
        try:
            runner.check(sample)
        except ArgumentError as exc:
            field = "--seed (plus the line number)" if exc.argument == "seed" and request.seed is None else exc.argument
            problems.append(f"line {number}: {field}: {exc.problem}")
            continue
        lock = runner.lock(sample)
        planned.append(PlannedLine(number, sample, f"{number:06d}.png", lock, lock_sha256(lock)))
    if problems:
        raise problems_error(f"--prompts {path}", problems)
    return planned


def batches_of(lines: list[PlannedLine], batch_size: int) -> list[list[PlannedLine]]:
    """Lines grouped by ``Sample.batch_key`` (groups in the order they first appear, lines in file
    order), each group cut into batches of at most ``batch_size`` lines and ``MAX_OUTPUT_PIXELS``."""
    groups: dict[tuple, list[PlannedLine]] = {}
    for line in lines:
        groups.setdefault(line.sample.batch_key, []).append(line)
    batches = []
    for group in groups.values():
        size = max(1, min(batch_size, MAX_OUTPUT_PIXELS // (group[0].sample.height * group[0].sample.width)))
        batches += [group[i:i + size] for i in range(0, len(group), size)]
    return batches


# -- the output folder and its manifest ---------------------------------------------------------


def check_batch_folder(out: str | None) -> Path:
    """``--out`` for a prompt file: a new folder, an empty one, or one a previous run wrote
    (it holds ``manifest.jsonl``). Checked before any work; nothing is created yet."""
    if out is None:
        raise SpecError("--prompts needs --out DIR: the folder for the images and their manifest.jsonl")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise SpecError(f"--out {out} is a file; with --prompts, --out is the folder the images and "
                        "manifest.jsonl are written into")
    if path.is_dir():
        ours = (path / MANIFEST).is_file() or any(path.glob(RANK_MANIFEST.format("*")))
        if not ours and any(path.iterdir()):
            raise SpecError(f"--out {out} holds files but no {MANIFEST}: it is not a folder sfumato generate "
                            "--prompts wrote; choose a new or empty folder")
    folder = path.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise SpecError(f"--out {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SpecError(f"--out {out}: cannot write into {folder} (permission denied)")
    return path


def manifest_files(folder: Path) -> list[Path]:
    """The manifests of a folder in the order their entries apply: the merged one, then each rank's."""
    ranks = sorted(folder.glob(RANK_MANIFEST.format("*")), key=lambda p: (len(p.name), p.name))
    return [p for p in [folder / MANIFEST, *ranks] if p.is_file()]


def read_manifest(folder: Path) -> dict[int, dict[str, Any]]:
    """Every finished line by number (a later entry for a line replaces an earlier one). A last
    line without its newline is the torn write of a killed run and is skipped.

    :raises SpecError: for a complete line that is not a manifest entry.
    """
    entries: dict[int, dict[str, Any]] = {}
    for path in manifest_files(folder):
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")[:-1]  # the part after the last newline is empty or torn
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not (isinstance(entry, dict) and isinstance(entry.get("line"), int)
                    and isinstance(entry.get("file"), str) and isinstance(entry.get("lock"), str)):
                raise SpecError(f"--out {folder}: {path.name} line {number} is not a manifest entry written by "
                                "sfumato generate --prompts; choose a new --out")
            entries[entry["line"]] = entry
    return entries


def append_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    """Append manifest lines in one write and flush them to disk (one process writes each file)."""
    data = "".join(json.dumps(entry, sort_keys=True) + "\n" for entry in entries).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_torn_line(path: Path) -> None:
    """Cut a file back to its last newline (a killed run's half-written line) before appending."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def merge_manifests(folder: Path) -> Path:
    """Rewrite ``manifest.jsonl`` (atomically) with every entry in line order; remove the ranks' files."""
    entries = read_manifest(folder)
    text = "".join(json.dumps(entries[n], sort_keys=True) + "\n" for n in sorted(entries))
    target = atomic_write(folder / MANIFEST, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    for path in manifest_files(folder)[1:]:
        path.unlink()
    return target


# -- the run ------------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    written: int
    skipped: int
    manifest: Path


def pending_lines(planned: list[PlannedLine], folder: Path, overwrite: bool) -> set[int]:
    """Numbers of the lines to make: not in the manifest, or without their image, or (with
    ``overwrite``) made with another lock.

    :raises SpecError: for lines made with another lock, without ``overwrite``.
    """
    done = read_manifest(folder) if folder.is_dir() else {}
    pending, changed = set(), []
    for line in planned:
        entry = done.get(line.number)
        if entry is not None and entry["lock"] != line.lock_sha256 and not overwrite:
            changed.append(line.number)
        elif entry is None or entry["lock"] != line.lock_sha256 or not (folder / entry["file"]).is_file():
            pending.add(line.number)
    if changed:
        listed = ", ".join(map(str, changed[:MAX_LISTED])) + (f" and {len(changed) - MAX_LISTED} more"
                                                             if len(changed) > MAX_LISTED else "")
        raise SpecError(f"--out {folder}: line(s) {listed} were made with another lock (the spec, its weights, "
                        "sfumato or the line changed since); pass --overwrite to make them again, or choose a "
                        "new --out")
    return pending


def pending_batches(planned: list[PlannedLine], folder: Path, batch_size: int,
                    overwrite: bool) -> tuple[list[list[PlannedLine]], set[int]]:
    """``(batches with a pending line, the pending line numbers)``; see ``pending_lines``."""
    pending = pending_lines(planned, folder, overwrite)
    return [b for b in batches_of(planned, batch_size) if any(line.number in pending for line in b)], pending


def make_batch(runner: SampleRunner, batch: list[PlannedLine], pending: set[int], folder: Path) -> list[dict[str, Any]]:
    """Run one batch whole (the rows of lines already made hold a pending line instead, so every
    line keeps its row and the batch its shape), write the pending lines' images atomically and
    return their manifest entries."""
    filler = next(line for line in batch if line.number in pending).sample
    images = runner.run([line.sample if line.number in pending else filler for line in batch])
    made = [(line, image) for line, image in zip(batch, images) if line.number in pending]
    folder.mkdir(parents=True, exist_ok=True)
    for line, image in made:
        save_image(image, folder / line.file, line.lock)
    return [line.manifest_entry() for line, _ in made]


def progress_bar(total: int, progress: bool, where: str = "") -> tqdm:
    """The images-per-second bar of a batch run (hidden when there is nothing to make)."""
    return tqdm(total=total, unit="img", desc=f"generating{where}", disable=not progress or not total)


def run_batches(runner: SampleRunner, planned: list[PlannedLine], folder: Path, *, batch_size: int,
                overwrite: bool, context: DistributedContext, progress: bool = True) -> BatchSummary:
    """Make this process's share of the pending lines, then (rank 0) merge the manifests.

    Every process plans the same batches from the same files; rank r runs pending batches r,
    r + N, ...
    """
    batches, pending = pending_batches(planned, folder, batch_size, overwrite)
    barrier(context)  # every process has read the manifests before any appends
    mine = batches[context.rank::context.world_size]
    manifest = folder / (RANK_MANIFEST.format(context.rank) if context.distributed else MANIFEST)
    drop_torn_line(manifest)
    total = sum(line.number in pending for batch in mine for line in batch)
    where = f" (process {context.rank + 1} of {context.world_size})" if context.distributed else ""
    written = 0
    with progress_bar(total, progress and context.is_main, where) as bar:
        for batch in mine:
            entries = make_batch(runner, batch, pending, folder)
            append_entries(manifest, entries)
            written += len(entries)
            bar.update(len(entries))
    counts = gather_objects(written, context)  # also waits for every process to finish
    if context.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        merge_manifests(folder)
    return BatchSummary(written=sum(counts), skipped=len(planned) - len(pending), manifest=folder / MANIFEST)
