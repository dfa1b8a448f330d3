"""Data parallel through ``torchrun`` (gloo on CPU): two processes train the same weights as one
process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sfumato
from sfumato_training_helpers import UNET, train_spec, write_class_folder

TORCHRUN = shutil.which("torchrun")


def sfumato_train(launcher: list[str], spec: Path, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "sfumato", "train", str(spec), "--out", str(out), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow  # two torchrun processes training
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    root = write_class_folder(tmp_path / "data", per_class=8)
    spec = train_spec(
        {"type": "train-diffusion", "conditioning": "class", "condition_dropout": 0.3}, root, steps=4,
        denoiser={**UNET, "num_classes": 2, "null_class": True}, diffusion={"timesteps": 100},
        # AdamW divides by sqrt(v) + eps: where a gradient element is as small as eps, the float32
        # rounding of a different summation order (8 samples on one process vs 4 + 4) is amplified by
        # lr / eps. With eps = 1e-8 the largest weight difference after 4 steps is about 6e-5, all
        # of it in such elements; eps = 1e-6 keeps the comparison about the data-parallel arithmetic.
        train={"batch_size": 8, "grad_accumulation": 2, "checkpoint_every": 2, "ema_decay": 0.9, "eps": 1e-6},
    )
    spec["dataset"]["hflip"] = True
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    sfumato_train([sys.executable], path, tmp_path / "one")
    sfumato_train([TORCHRUN, "--standalone", "--nproc-per-node", "2"], path, tmp_path / "two")

    for name in ("denoiser.safetensors", "denoiser.no-ema.safetensors"):
        one, two = sfumato.load_weights(tmp_path / "one" / name), sfumato.load_weights(tmp_path / "two" / name)
        worst = max((one[k] - two[k]).abs().max().item() for k in one)
        assert worst < 1e-5, f"{name}: largest difference {worst}"
    lines = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]  # one log, written by rank 0 only
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["step-00000002.pt", "step-00000004.pt"]
    state = torch.load(tmp_path / "two" / "checkpoints" / "step-00000004.pt", weights_only=True)
    assert len(state["rng"]) == 2  # every process's RNG states
