"""The harness's pieces: the [train] table, learning-rate schedule, EMA, per-sample randomness,
gradient accumulation, mixed precision, metrics, plots, sample grids and callbacks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

import sfumato
from sfumato.training import EMA, SampleRandom, TrainSpec, learning_rate
from sfumato.training.spec import effective_train_spec
from sfumato_training_helpers import UNET, VAE, losses, run, train_spec

DIFFUSION = {"denoiser": {**UNET, "num_classes": 2, "null_class": True}, "diffusion": {"timesteps": 100}}
CLASS_TASK = {"type": "train-diffusion", "conditioning": "class"}


def test_warmup_then_cosine_reaches_min_lr_at_the_last_step():
    spec = TrainSpec(lr=1e-3, warmup_steps=4, lr_schedule="cosine", min_lr=1e-5)
    assert [learning_rate(s, 20, spec) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert learning_rate(4, 20, spec) == pytest.approx(1e-3)
    assert learning_rate(19, 20, spec) == pytest.approx(1e-5)
    middle = 4 + (19 - 4) / 2
    assert learning_rate(int(middle), 20, spec) < 1e-3 and learning_rate(12, 20, spec) == pytest.approx(
        1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 8 / 15)))
    assert learning_rate(10, 20, TrainSpec(lr=3e-4)) == 3e-4  # constant, no warm-up


def test_task_defaults_yield_to_the_spec_file():
    defaults = {"epochs": 5, "batch_size": 16, "lr": 1e-3}
    given = TrainSpec.model_validate({"batch_size": 4})
    merged = effective_train_spec(given, defaults)
    assert (merged.epochs, merged.batch_size, merged.lr) == (5, 4, 1e-3)
    merged = effective_train_spec(TrainSpec.model_validate({"steps": 7}), defaults)
    assert (merged.steps, merged.epochs) == (7, None)  # steps replaces the task's epochs
    assert effective_train_spec(None, {}).steps is None


def test_ema_averages_with_warmed_up_decay():
    layer = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(layer.weight)
    ema = EMA({"layer": layer}, decay=0.9)
    layer.weight.data.fill_(1.0)
    ema.update()  # decay min(0.9, 1/10) = 0.1: shadow = 0.1 * 0 + 0.9 * 1
    assert ema.shadow["layer"]["weight"].item() == pytest.approx(0.9)
    with ema.applied():
        assert layer.weight.item() == pytest.approx(0.9)
    assert layer.weight.item() == 1.0


def test_sample_noise_depends_on_the_sample_not_the_batch():
    whole = SampleRandom(0, [0, 0, 0, 0], [5, 6, 7, 8]).randn(2, 3)
    part = SampleRandom(0, [0, 0], [7, 5]).randn(2, 3)
    assert torch.equal(part[0], whole[2]) and torch.equal(part[1], whole[0])
    again = SampleRandom(0, [0, 0], [7, 5])
    assert not torch.equal(again.randn(2, 3), again.randn(2, 3))  # each call is a new draw
    assert not torch.equal(SampleRandom(0, [1], [5]).randn(2, 3), whole[:1])  # another epoch, other noise


def test_gradient_accumulation_matches_the_whole_batch(class_folder, tmp_path):
    whole = run(train_spec(CLASS_TASK, class_folder, steps=3, train={"eps": 1e-6}, **DIFFUSION), tmp_path / "a")
    split = run(train_spec(CLASS_TASK, class_folder, steps=3, train={"eps": 1e-6, "grad_accumulation": 4}, **DIFFUSION),
                tmp_path / "b")
    assert losses(whole) == pytest.approx(losses(split), rel=1e-5)
    a, b = sfumato.load_weights(whole.weights["denoiser"]), sfumato.load_weights(split.weights["denoiser"])
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_bfloat16_autocast_trains_on_cpu(class_folder, tmp_path):
    full = run(train_spec(CLASS_TASK, class_folder, steps=3, **DIFFUSION), tmp_path / "fp32")
    mixed = run(train_spec(CLASS_TASK, class_folder, steps=3, train={"precision": "bfloat16"}, **DIFFUSION),
                tmp_path / "bf16")
    assert all(math.isfinite(v) for v in losses(mixed))
    assert losses(mixed) != losses(full)  # the forward really ran in bfloat16
    assert losses(mixed)[0] == pytest.approx(losses(full)[0], rel=0.05)
    assert all(v.dtype == torch.float32 for v in sfumato.load_weights(mixed.weights["denoiser"]).values())


class Recorder(sfumato.TrainCallback):
    def __init__(self):
        self.events = []

    def on_start(self, out, config):
        self.events.append(("start", config["task"]["type"]))

    def on_log(self, step, metrics):
        self.events.append(("log", step))

    def on_samples(self, step, images, path):
        self.events.append(("samples", step, tuple(images.shape)))

    def on_end(self, out):
        self.events.append(("end",))


def test_outputs_metrics_plot_samples_checkpoints_and_callbacks(class_folder, tmp_path):
    recorder = Recorder()
    spec = train_spec(CLASS_TASK, class_folder, steps=4, train={
        "log_every": 2, "sample_every": 2, "sample_count": 4, "checkpoint_every": 1, "keep_checkpoints": 2,
        "ema_decay": 0.5}, **DIFFUSION, scheduler={"type": "ddim", "steps": 2})
    result = run(spec, tmp_path, callbacks=[recorder])
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert set(lines[0]) == {"step", "epoch", "loss", "mse", "grad_norm", "lr"}
    assert Image.open(tmp_path / "loss.png").format == "PNG"
    grids = sorted((tmp_path / "samples").iterdir())
    assert [g.name for g in grids] == ["step-00000002.png", "step-00000004.png"]
    assert Image.open(grids[0]).size == (4 * 16, 16)  # four 16 px samples in a row
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000003.pt", "step-00000004.pt"]
    assert recorder.events == [("start", "train-diffusion"), ("log", 2), ("samples", 2, (4, 3, 16, 16)),
                               ("log", 4), ("samples", 4, (4, 3, 16, 16)), ("end",)]
    ema, raw = sfumato.load_weights(tmp_path / "denoiser.safetensors"), sfumato.load_weights(
        tmp_path / "denoiser.no-ema.safetensors")
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)
    assert result.steps == 4


def test_vae_samples_show_images_above_their_reconstructions(class_folder, tmp_path):
    spec = train_spec({"type": "train-vae"}, class_folder, steps=1, train={"sample_every": 1, "sample_count": 3},
                      autoencoder=VAE)
    run(spec, tmp_path)
    assert Image.open(tmp_path / "samples" / "step-00000001.png").size == (6 * 16, 16)


def test_missing_logger_package_says_how_to_install_it(class_folder, tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(sfumato.SpecError, match="pip install tensorboard"):
            run(train_spec(CLASS_TASK, class_folder, train={"loggers": ["tensorboard"]}, **DIFFUSION), tmp_path)
    else:
        pytest.skip("tensorboard is installed")


def test_train_command_trains_and_reports(class_folder, tmp_path, capsys):
    import tomli_w
    from sfumato.cli import main

    path = tmp_path / "spec.toml"
    path.write_text(tomli_w.dumps(train_spec(CLASS_TASK, class_folder, steps=1, **DIFFUSION)))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "--set", "train.steps=2", "--set", "train.checkpoint_every=2",
                 "--no-progress"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert (out / "denoiser.safetensors").is_file()
    marked = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    marked[0]["marker"] = True
    (out / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in marked))
    # Resuming with more steps continues from the step-2 checkpoint: its metrics lines stay.
    assert main(["train", str(path), "--out", str(out), "--set", "train.steps=3", "--resume", "--no-progress"]) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3] and lines[0].get("marker") is True


def test_a_pipeline_whose_task_trains_trains_when_called(class_folder, tmp_path):
    pipe = sfumato.load_pipeline(train_spec(CLASS_TASK, class_folder, steps=2, **DIFFUSION))
    result = pipe(out=tmp_path)
    assert isinstance(result, sfumato.TrainResult) and result.steps == 2
    assert (tmp_path / "denoiser.safetensors").is_file()
