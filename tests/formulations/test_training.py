"""``train-diffusion`` trains every formulation: flow matching (velocity target, logit-normal
levels) and EDM (preconditioned F, log-normal sigma) as well as VP; the loss falls and the
trained model samples."""

from __future__ import annotations

import json

import pytest
import torch

import sfumato
from sfumato.cli import main

DENOISER = {"type": "dit", "sample_size": 8, "in_channels": 3, "patch_size": 2, "num_layers": 2,
            "num_attention_heads": 2, "attention_head_dim": 8, "num_classes": 10}


def spec(diffusion: dict, out: str) -> dict:
    return {
        "task": {"type": "train-diffusion", "conditioning": "class", "condition_dropout": 0.1},
        "dataset": {"type": "digits", "resolution": 8},
        "denoiser": DENOISER,
        "diffusion": diffusion,
        "scheduler": {"type": "euler", "steps": 4},
        "train": {"steps": 40, "batch_size": 32, "lr": 2e-3, "warmup_steps": 2, "log_every": 5, "out": out},
    }


@pytest.mark.parametrize("diffusion", [{"type": "flow", "shift": 2.0}, {"type": "edm", "sigma_data": 0.5},
                                       {"type": "vp", "prediction": "v"}], ids=["flow", "edm", "vp"])
def test_training_lowers_the_loss_and_the_model_samples(diffusion, tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(spec(diffusion, str(tmp_path / "run"))))
    assert main(["train", str(tmp_path / "spec.json"), "--no-progress"]) == 0
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in line]
    assert losses[-1] < 0.8 * losses[0], losses
    pipe = sfumato.load_pipeline({
        "task": {"type": "class-to-image", "height": 8, "width": 8},
        "autoencoder": {"type": "identity"},
        "denoiser": {**DENOISER, "weights": str(tmp_path / "run" / "denoiser.safetensors")},
        "diffusion": diffusion, "scheduler": {"type": "euler", "steps": 4},
    })
    assert torch.isfinite(pipe(labels=[3], seed=0, progress=False).decoded).all()


def test_min_snr_weighting_is_refused_for_a_formulation_with_its_own_weight(tmp_path):
    data = spec({"type": "flow"}, str(tmp_path / "run"))
    data["task"]["min_snr_gamma"] = 5.0
    (tmp_path / "spec.json").write_text(json.dumps(data))
    assert main(["train", str(tmp_path / "spec.json"), "--no-progress"]) == 2
