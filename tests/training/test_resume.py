"""``--resume`` continues exactly: a run killed with SIGKILL (between steps, or in the middle of
writing a checkpoint) and resumed ends with bitwise the same weights as one never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sfumato
from sfumato.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from sfumato_training_helpers import UNET, train_spec, write_class_folder

WORKER = Path(__file__).with_name("train_worker.py")


@pytest.fixture(scope="module")
def resume_spec(tmp_path_factory) -> Path:
    """Diffusion with everything that carries state: 16 images in batches of 4 (so checkpoints
    fall mid-epoch), random flips, dropout, condition dropout, gradient accumulation, warm-up and
    cosine learning rate, EMA."""
    root = write_class_folder(tmp_path_factory.mktemp("resume-data"), per_class=8)
    spec = train_spec(
        {"type": "train-diffusion", "conditioning": "class", "condition_dropout": 0.3}, root, steps=8,
        denoiser={**UNET, "num_classes": 2, "null_class": True, "dropout": 0.1}, diffusion={"timesteps": 100},
        train={"batch_size": 4, "grad_accumulation": 2, "warmup_steps": 2, "lr_schedule": "cosine",
               "ema_decay": 0.9, "checkpoint_every": 3, "keep_checkpoints": 3, "log_every": 2},
    )
    spec["dataset"]["hflip"] = True
    path = tmp_path_factory.mktemp("resume-spec") / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def train_process(spec: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(WORKER), str(spec), str(out), *flags], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(resume_spec, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    done = train_process(resume_spec, out)
    assert done.returncode == 0, done.stderr
    return out


def assert_same_weights(a: Path, b: Path) -> None:
    for name in ("denoiser.safetensors", "denoiser.no-ema.safetensors"):
        left, right = sfumato.load_weights(a / name), sfumato.load_weights(b / name)
        assert left.keys() == right.keys()
        different = [k for k in left if not torch.equal(left[k], right[k])]
        assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"


def test_sigkill_then_resume_gives_bitwise_the_same_weights(resume_spec, uninterrupted, tmp_path):
    killed = train_process(resume_spec, tmp_path, "--kill-at", "5")
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "denoiser.safetensors").exists()
    assert latest_checkpoint(tmp_path).name == "step-00000003.pt"
    resumed = train_process(resume_spec, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(uninterrupted, tmp_path)
    # The metrics read as one run: the killed run's lines after step 3 were replaced.
    assert (tmp_path / "metrics.jsonl").read_text() == (uninterrupted / "metrics.jsonl").read_text()


@pytest.mark.slow  # a second killed run; the SIGKILL-resume test above stays in the default run
def test_kill_inside_a_checkpoint_write_leaves_the_previous_one_loadable(resume_spec, uninterrupted, tmp_path):
    killed = train_process(resume_spec, tmp_path, "--kill-in-checkpoint", "6")
    assert killed.returncode == -signal.SIGKILL
    folder = tmp_path / "checkpoints"
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".step-00000006.pt.")]
    assert leftovers, "the temporary file of the interrupted write should be left behind"
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3]
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 3
    resumed = train_process(resume_spec, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(uninterrupted, tmp_path)


def test_a_truncated_checkpoint_is_a_clear_error(resume_spec, uninterrupted, tmp_path):
    path = latest_checkpoint(uninterrupted)
    broken = tmp_path / "step-00000008.pt"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(sfumato.SfumatoError, match="step-00000008.pt: not a readable checkpoint"):
        load_checkpoint(broken)


def test_checkpoint_holds_every_piece_of_state(uninterrupted):
    state = load_checkpoint(latest_checkpoint(uninterrupted))
    assert state["step"] == 8
    assert state["data"] == {"epoch": 2, "batches": 0, "steps_per_epoch": 4, "seed": 0}
    assert set(state) >= {"modules", "optimizer", "ema", "lr_schedule", "rng", "metrics"}
    assert set(state["rng"][0]) >= {"torch", "numpy", "python"}
    assert state["ema"]["updates"] == 8
    assert [step for step, _ in list_checkpoints(uninterrupted)] == [3, 6, 8]
