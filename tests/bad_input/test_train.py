"""``sfumato train`` with bad input, and the faults a run meets: one run per output folder (a fresh
run never truncates another run's metrics; a lock keeps two runs apart), resume only from a
checkpoint that fits (architecture, total steps), interrupted writes cleaned up, a full disk and a
diverging run named, and the warnings a user would otherwise miss."""

from __future__ import annotations

import errno
import fcntl
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import sfumato
from bad_input.harness import Case, check, run_cli
from sfumato.training import checkpoint as checkpoint_module
from sfumato.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from sfumato.training.metrics import save_sample_grid
from sfumato.weights import DiskFullError, atomic_write, load_weights
from sfumato_training_helpers import UNET, run, train_spec, write_class_folder

CLASSIFIER = {"type": "noise-classifier", "num_classes": 2, "channels": [8], "norm_groups": 4}
#: Files a refused or failed run may leave: its lock (and the metrics it had begun).
LOCK = "out/.train.lock"


def spec_dict(root: Path, **train: Any) -> dict[str, Any]:
    """A tiny pixel diffusion run on ``root/data`` (8 images of 16 px, one batch per step)."""
    data = root / "data"
    if not data.is_dir():
        write_class_folder(data)
    tables = train.pop("tables", {"denoiser": UNET, "diffusion": {"timesteps": 100}})
    task = train.pop("task", {"type": "train-diffusion"})
    return train_spec(task, data, steps=train.pop("steps", 2), train=train, **tables)


def write_spec(root: Path, name: str = "spec.json", **train: Any) -> dict[str, Any]:
    spec = spec_dict(root, **train)
    (root / name).write_text(json.dumps(spec))
    return spec


def with_spec(**train: Any) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        write_spec(root, **train)

    return setup


def earlier_run(checkpoint_every: int = 1, steps: int = 2, afterwards: Callable[[Path], None] | None = None,
                **train: Any) -> Callable[[Path], None]:
    """Setup: ``out`` holds a finished run of the spec (checkpoints every ``checkpoint_every`` steps),
    and ``spec.json`` is that spec (``afterwards`` may change the files)."""

    def setup(root: Path) -> None:
        spec = write_spec(root, steps=steps, checkpoint_every=checkpoint_every, **train)
        run(spec, root / "out")
        if afterwards is not None:
            afterwards(root)

    return setup


def other_spec(**train: Any) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        write_spec(root, "other.json", **train)

    return setup


def earlier_run_in_spec_out(root: Path) -> None:
    """Setup: the spec's own ``[train] out`` holds a finished run."""
    run(write_spec(root, out=str(root / "out"), checkpoint_every=1), None)


#: Open lock files held by a case's setup, released after each test.
HELD: list[Any] = []


@pytest.fixture(autouse=True)
def _release_held_locks():
    yield
    while HELD:
        HELD.pop().close()


def hold_lock(root: Path) -> None:
    """Setup: another process trains into ``out`` (its lock is held)."""
    write_spec(root)
    (root / "out").mkdir()
    handle = open(root / LOCK, "a+")
    handle.write("4242\n")
    handle.flush()
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    HELD.append(handle)


def then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    """Setup: ``steps`` one after the other."""

    def setup(root: Path) -> None:
        for step in steps:
            step(root)

    return setup


CASES = [
    # One run per folder.
    Case("fresh-run-over-checkpoints", ["train", "spec.json", "--out", "out"], setup=earlier_run(),
         needles=["out holds another run", "2 checkpoint(s) up to step 2", "--resume", "--overwrite"]),
    Case("fresh-run-over-metrics", ["train", "spec.json", "--out", "out"], setup=earlier_run(checkpoint_every=0),
         needles=["holds another run", "metrics.jsonl", "--overwrite"]),
    Case("fresh-run-over-spec-out", ["train", "spec.json"], setup=earlier_run_in_spec_out,
         needles=["holds another run"]),
    Case("other-spec-over-run", ["train", "other.json", "--out", "out"],
         setup=then(earlier_run(), other_spec(steps=3)), needles=["holds another run"]),
    Case("resume-a-run-without-checkpoints", ["train", "spec.json", "--out", "out", "--resume"],
         setup=earlier_run(checkpoint_every=0), needles=["no checkpoint to resume from", "--overwrite"]),
    Case("resume-and-overwrite", ["train", "spec.json", "--out", "out", "--resume", "--overwrite"],
         setup=earlier_run(), needles=["--resume and --overwrite", "choose one"]),
    Case("out-is-a-file", ["train", "spec.json", "--out", "notes.txt"],
         setup=then(with_spec(), lambda root: (root / "notes.txt").write_text("mine")),
         needles=["--out notes.txt is a file"]),
    Case("out-below-a-file", ["train", "spec.json", "--out", "notes.txt/run"],
         setup=then(with_spec(), lambda root: (root / "notes.txt").write_text("mine")),
         needles=["cannot use notes.txt/run as the output folder", "not a directory"]),
    Case("folder-locked-by-another-run", ["train", "spec.json", "--out", "out"], setup=hold_lock,
         needles=["out: another training run holds this folder", "process 4242"]),
    Case("resume-locked-by-another-run", ["train", "spec.json", "--out", "out", "--resume"], setup=hold_lock,
         needles=["another training run holds this folder"]),
    # Resume only from a checkpoint that fits.
    Case("resume-other-architecture", ["train", "other.json", "--out", "out", "--resume"],
         setup=then(earlier_run(), other_spec(checkpoint_every=1, tables={
             "denoiser": {**UNET, "block_out_channels": [8, 16]}, "diffusion": {"timesteps": 100}})),
         needles=["step-00000002.pt", "another architecture", "mis-shaped", "conv_in.weight"]),
    Case("resume-other-modules", ["train", "other.json", "--out", "out", "--resume"],
         setup=then(earlier_run(), other_spec(checkpoint_every=1, task={"type": "train-classifier"},
                                              tables={"classifier": CLASSIFIER, "diffusion": {"timesteps": 100}})),
         needles=["another architecture", "module 'classifier' is trained by this spec but not in the checkpoint",
                  "module 'denoiser' is in the checkpoint"]),
    Case("resume-cosine-with-other-steps", ["train", "spec.json", "--out", "out", "--resume", "--set", "train.steps=6"],
         setup=earlier_run(steps=4, checkpoint_every=2, lr_schedule="cosine"),
         needles=["started with 4 total steps", "this spec trains 6", "cosine"]),
    Case("resume-past-the-end", ["train", "spec.json", "--out", "out", "--resume", "--set", "train.steps=1"],
         setup=earlier_run(), needles=["checkpoint is at step 2, past this spec's 1 steps", "[train] steps"]),
    Case("resume-other-batch", ["train", "spec.json", "--out", "out", "--resume", "--set", "train.batch_size=4"],
         setup=earlier_run(), needles=["steps per epoch", "batch_size"]),
    Case("resume-truncated-checkpoint", ["train", "spec.json", "--out", "out", "--resume"],
         setup=earlier_run(afterwards=lambda root: (root / "out/checkpoints/step-00000002.pt").write_bytes(b"PK\x03\x04")),
         needles=["step-00000002.pt: not a readable checkpoint"]),
    # The run fails while training: named, with the step.
    Case("diverging-run", ["train", "spec.json", "--out", "out", "--set", "train.lr=1e30", "--set", "train.steps=3"],
         setup=with_spec(), needles=["training diverged at step 2", "nan", "lr"],
         may_write=[LOCK, "out/metrics.jsonl"]),
    # The spec itself (regression guards: named before any work, nothing written).
    Case("pickle-weights", ["train", "other.json", "--out", "out"],
         setup=then(with_spec(), lambda root: (root / "model.ckpt").write_bytes(b"not read"),
                    lambda root: write_spec(root, "other.json", tables={
                        "denoiser": {**UNET, "weights": str(root / "model.ckpt")}, "diffusion": {"timesteps": 100}})),
         needles=["model.ckpt: refusing to load a pickle checkpoint", "allow_pickle=True", "sfumato.save_weights"]),
    Case("zero-steps", ["train", "spec.json", "--set", "train.steps=0"], setup=with_spec(),
         needles=["[train] steps"]),
    Case("unknown-train-field", ["train", "spec.json", "--set", "train.stepz=3"], setup=with_spec(),
         needles=["[train] stepz"]),
    Case("batch-larger-than-dataset", ["train", "spec.json", "--set", "train.batch_size=64"], setup=with_spec(),
         needles=["fewer than one [train] batch_size of 64"]),
    Case("not-a-training-task", ["train", "spec.json", "--set", "task.type=unconditional"], setup=with_spec(),
         needles=["is not a training task"]),
    Case("float16-on-cpu", ["train", "spec.json", "--set", "train.precision=float16", "--set", "runtime.device=cpu"],
         setup=with_spec(), needles=["precision = \"float16\" needs CUDA"]),
    Case("missing-spec", ["train", "nope.toml"], needles=["nope.toml"]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_training_input_exits_2_and_changes_nothing(case, tmp_path, capsys, monkeypatch):
    message = check(case, tmp_path, capsys, monkeypatch)
    assert "--allow-pickle" not in message  # no command defines it


def test_the_pickle_message_names_only_what_exists(tmp_path):
    from sfumato import WeightsError

    path = tmp_path / "model.ckpt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(WeightsError) as caught:
        load_weights(path)
    assert "--allow-pickle" not in str(caught.value)
    assert load_weights(path, allow_pickle=True)["w"].shape == (2,)  # the Python argument it names works


def test_overwrite_replaces_the_earlier_run_and_keeps_other_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    earlier_run(steps=3, checkpoint_every=1, sample_every=1, save_every_epoch=True)(tmp_path)
    out = tmp_path / "out"
    (out / "notes.txt").write_text("mine")
    assert [s for s, _ in list_checkpoints(out)] == [2, 3] and (out / "epoch-1").is_dir()
    code, printed, err = run_cli(["train", "spec.json", "--out", "out", "--overwrite", "--set", "train.steps=1",
                                  "--set", "train.checkpoint_every=0"], capsys)
    assert code == 0, err
    assert list_checkpoints(out) == [] and sorted(p.name for p in out.glob("epoch-*")) == ["epoch-1"]
    assert [p.name for p in (out / "samples").iterdir()] == ["step-00000001.png"]
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert (out / "notes.txt").read_text() == "mine"
    assert printed.startswith("trained 1 steps; weights in out: denoiser.safetensors")


def test_a_half_written_metrics_line_does_not_stop_a_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    earlier_run(steps=4, checkpoint_every=2)(tmp_path)
    metrics = tmp_path / "out" / "metrics.jsonl"
    (tmp_path / "out" / "checkpoints" / "step-00000004.pt").unlink()  # killed after step 4's log line, cut in half
    metrics.write_text(metrics.read_text()[:-20])
    with pytest.warns(UserWarning, match=r"metrics.jsonl:4: not a JSON object"):
        code, printed, err = run_cli(["train", "spec.json", "--out", "out", "--resume"], capsys)
    assert code == 0, err
    assert "trained 4 steps (resumed from step 2)" in printed
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4]


def test_resuming_reports_the_step_and_a_constant_schedule_may_train_longer(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    earlier_run(steps=2, checkpoint_every=1)(tmp_path)
    code, printed, err = run_cli(["train", "spec.json", "--out", "out", "--resume", "--set", "train.steps=3"], capsys)
    assert code == 0, err
    assert "trained 3 steps (resumed from step 2)" in printed
    assert load_checkpoint(latest_checkpoint(tmp_path / "out"))["lr_schedule"]["total_steps"] == 3


def test_checkpoints_record_the_architecture(tmp_path):
    earlier_run()(tmp_path)
    state = load_checkpoint(latest_checkpoint(tmp_path / "out"))
    assert len(state["architecture"]) == 64 and state["lr_schedule"]["total_steps"] == 2


def test_stale_temporaries_of_killed_writes_are_removed_when_a_run_starts(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    orphans = [out / "checkpoints" / f".step-0000000{i}.pt.k{i}x_ab12.tmp" for i in range(3)]
    orphans.append(out / ".denoiser.safetensors.zz99yy88.tmp")
    for orphan in orphans:
        orphan.write_bytes(b"\0" * 1000)
    kept = out / "checkpoints" / ".notes.tmp"  # not atomic_write's pattern: not ours
    kept.write_text("mine")
    with pytest.warns(UserWarning, match=r"removed 4 temporary file\(s\) \(0.0 MB\)"):
        run(spec_dict(tmp_path), out)
    assert not any(p.exists() for p in orphans) and kept.exists()


def test_a_full_disk_during_a_checkpoint_write_is_named_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    def disk_full(state, path):
        Path(path).write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    case = Case("disk-full", ["train", "spec.json", "--out", "out", "--set", "train.checkpoint_every=1"],
                setup=with_spec(), may_write=[LOCK, "out/metrics.jsonl"],
                needles=["out/checkpoints/step-00000001.pt: no space left on device", "nothing was written"])
    check(case, tmp_path, capsys, monkeypatch)
    assert list((tmp_path / "out" / "checkpoints").iterdir()) == []


def test_torch_reports_a_full_disk_without_errno_and_it_is_still_named(tmp_path, monkeypatch):
    """torch's own file writer raises a RuntimeError about stream positions when the disk fills."""
    monkeypatch.setattr("shutil.disk_usage", lambda _: type("Usage", (), {"free": 4096})())

    def torch_write(tmp):
        Path(tmp).write_bytes(b"\0" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(DiskFullError, match="step.pt: no space left on device"):
        atomic_write(tmp_path / "step.pt", torch_write)
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_keep_their_type(tmp_path):
    def broken(tmp):
        raise RuntimeError("a bug in the writer")

    with pytest.raises(RuntimeError, match="a bug in the writer"):
        atomic_write(tmp_path / "x.pt", broken)
    assert list(tmp_path.iterdir()) == []


def test_only_the_main_process_prints_the_summary(tmp_path, capsys, monkeypatch):
    """Under torchrun every process runs the command; only rank 0 (which saved the weights) prints."""
    from sfumato.cli import train_command

    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path)
    code, printed, err = run_cli(["train", "spec.json", "--out", "out"], capsys)
    assert code == 0 and printed.startswith("trained 2 steps; weights in out: denoiser.safetensors"), err
    other_rank = sfumato.TrainResult(tmp_path / "out", 2, is_main=False)
    monkeypatch.setattr(train_command, "train", lambda *args, **kwargs: other_rank)
    assert run_cli(["train", "spec.json", "--out", "elsewhere"], capsys)[:2] == (0, "")


def test_sample_grids_far_outside_the_image_range_warn(tmp_path):
    images = torch.zeros(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_sample_grid(images.uniform_(-6, 6), tmp_path / "early.png")  # an early model overshoots this far
    images[1, 0, 0, 0] = 60.0
    with pytest.warns(UserWarning, match=r"diverged.png: sample values reach 60, far outside \[-1, 1\]"):
        save_sample_grid(images, tmp_path / "diverged.png")
    images[0, 0, 0, 0] = float("nan")
    with pytest.warns(UserWarning, match="reach nan"):
        save_sample_grid(images, tmp_path / "nan.png")
