"""``[train] eval_every``: a recipe's held-out figures (``Recipe.evaluate``) every N steps, written to
``metrics.jsonl`` as ``eval_*`` lines and plotted under the loss, without changing what the run
trains (same weights, bit for bit, as a run without it; resume stays exact)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sfumato
import torch
from sfumato.specs import load_spec
from sfumato.training.evaluation import held_out_spec
from sfumato_training_helpers import CLIP_IMAGE, CLIP_TEXT, UNET, run, train_spec, write_class_folder

#: train-clip on digits (labels and two captions an image: both zero-shot and retrieval figures).
DIGITS = {"type": "digits", "resolution": 16}


def clip_spec(eval_every: int, **train) -> dict:
    spec = train_spec({"type": "train-clip"}, Path("unused"), steps=4, text_encoder=CLIP_TEXT, image_encoder=CLIP_IMAGE,
                      train={"eval_every": eval_every, "eval_size": 24, "checkpoint_every": 2, **train})
    spec["dataset"] = dict(DIGITS)
    return spec


def weights(out: Path) -> dict[str, torch.Tensor]:
    return {f"{name}/{key}": value for name in ("text_encoder", "image_encoder", "temperature")
            for key, value in sfumato.load_weights(out / f"{name}.safetensors").items()}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluated")
    run(clip_spec(2), out)
    sfumato.set_registry(None)
    return out


def test_figures_are_logged_every_n_steps_and_plotted(evaluated):
    lines = [json.loads(line) for line in (evaluated / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if any(key.startswith("eval_") for key in line)]
    assert [line["step"] for line in evals] == [2, 4]
    assert set(evals[0]) == {"step", "epoch", "eval_zero_shot_top1", "eval_image_to_text_r1", "eval_image_to_text_r5",
                             "eval_text_to_image_r1", "eval_text_to_image_r5"}
    assert all(0.0 <= value <= 1.0 for line in evals for key, value in line.items() if key.startswith("eval_"))
    assert all("loss" in line for line in lines if line not in evals)
    assert (evaluated / "loss.png").is_file()


def test_evaluating_does_not_change_what_the_run_trains(evaluated, tmp_path):
    run(clip_spec(0), tmp_path)
    mine, reference = weights(evaluated), weights(tmp_path)
    assert mine.keys() == reference.keys()
    assert all(torch.equal(mine[k], reference[k]) for k in mine)


class Interrupt(sfumato.TrainCallback):
    def on_step_end(self, step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt


def test_a_resumed_run_with_evaluation_is_exact(evaluated, tmp_path):
    spec = load_spec(clip_spec(2), sfumato.get_registry())
    with pytest.raises(KeyboardInterrupt):
        sfumato.train(spec, out=tmp_path, callbacks=[Interrupt()])
    sfumato.train(spec, out=tmp_path, resume=True)
    mine, reference = weights(tmp_path), weights(evaluated)
    assert all(torch.equal(mine[k], reference[k]) for k in mine)
    assert (tmp_path / "metrics.jsonl").read_text() == (evaluated / "metrics.jsonl").read_text()


def test_the_held_out_set_is_the_test_split_else_another_seed(tmp_path):
    registry = sfumato.get_registry()
    digits = registry.get("dataset", "digits").Spec.model_validate({"type": "digits"})
    assert held_out_spec(digits)["split"] == "test"
    shapes = registry.get("dataset", "shapes").Spec.model_validate({"type": "shapes", "seed": 3})
    assert held_out_spec(shapes)["seed"] == 4
    folder = registry.get("dataset", "imagefolder").Spec.model_validate({"type": "imagefolder", "root": str(tmp_path),
                                                                          "hflip": True})
    with pytest.raises(sfumato.SpecError, match="split = 'all' already holds the 'val' images"):
        held_out_spec(folder)
    held = held_out_spec(folder.model_copy(update={"split": "train"}))
    assert (held["split"], held["hflip"], held["crop"]) == ("val", False, "center")


def test_a_task_without_evaluation_refuses_eval_every(tmp_path):
    root = write_class_folder(tmp_path / "data")
    spec = train_spec({"type": "train-diffusion", "conditioning": "class", "condition_dropout": 0}, root, steps=1,
                      denoiser={**UNET, "num_classes": 2}, diffusion={"timesteps": 10}, train={"eval_every": 1})
    spec["dataset"]["split"] = "train"
    with pytest.raises(sfumato.SpecError, match="eval_every = 1: task 'train-diffusion' has no held-out evaluation"):
        run(spec, tmp_path / "out")
