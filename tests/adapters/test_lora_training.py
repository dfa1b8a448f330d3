"""``train-lora``: LoRA factors on the built-in ``shapes`` model, base weights frozen, saved in the
diffusers / PEFT and kohya layouts that ``[[adapters]]`` and ``--lora`` load back as exactly the
model that was trained; resumable bitwise; DreamBooth prompts with prior preservation."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sfumato
from sfumato.cli import main
from sfumato.specs import load_spec
from sfumato.training.checkpoint import latest_checkpoint, load_checkpoint

SHAPES = Path(sfumato.get_registry().model("shapes").spec_path)
RED, BLUE, BACKGROUND = (220, 40, 40), (40, 90, 220), (235, 235, 235)


def lora_type():
    return sfumato.get_registry().get("adapter", "lora")


def write_star_folder(root: Path, count: int = 8) -> Path:
    """``count`` 64 px images of a red or blue five-pointed star, captioned ``a red star``."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        colour, name = (RED, "red") if i % 2 == 0 else (BLUE, "blue")
        image = Image.new("RGB", (64, 64), BACKGROUND)
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 14.0, 6.0)
        cx, cy = 24 + 2 * i, 30
        points = [(cx + r * np.cos(a), cy - r * np.sin(a)) for r, a in zip(radii, angles)]
        from PIL import ImageDraw

        ImageDraw.Draw(image).polygon(points, fill=colour)
        image.save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"a {name} star"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    return root


def lora_spec(root: Path, task: dict, **train) -> dict:
    """The built-in shapes model's spec (absolute weight paths) with a ``train-lora`` task."""
    spec = tomllib.loads(SHAPES.read_text())
    for table in ("text_encoder", "autoencoder", "denoiser"):
        spec[table]["weights"] = str(SHAPES.parent / spec[table]["weights"])
    spec["text_encoder"]["tokenizer"] = str(SHAPES.parent / spec["text_encoder"]["tokenizer"])
    del spec["image_encoder"], spec["guidance"]
    spec["task"] = {"type": "train-lora", "rank": 2, **task}
    spec["dataset"] = {"type": "imagefolder", "root": str(root), "resolution": 64}
    spec["train"] = {"steps": 3, "batch_size": 2, "lr": 1e-2, "log_every": 1, "checkpoint_every": 0,
                     "progress": False, **train}
    return spec


def generate(pipe, seed: int = 1):
    return sfumato.generate(pipe, "a red star", seed=seed, steps=4, progress=False)


@pytest.fixture(scope="module")
def stars(tmp_path_factory) -> Path:
    return write_star_folder(tmp_path_factory.mktemp("stars"))


@pytest.fixture(scope="module")
def trained(stars, tmp_path_factory) -> Path:
    """Three steps of a rank-2 LoRA on the U-Net's attention and the text encoder, through the CLI."""
    folder = tmp_path_factory.mktemp("lora-run")
    spec = folder / "lora.json"
    spec.write_text(json.dumps(lora_spec(stars, {"train_text_encoder": True, "sample_steps": 2}, checkpoint_every=3,
                                         sample_every=3, sample_count=2)))
    assert main(["train", str(spec), "--out", str(folder / "run"), "--no-progress"]) == 0
    return folder / "run"


def test_a_trained_lora_loads_as_exactly_the_model_that_was_trained(trained, tmp_path):
    pipe = sfumato.load_pipeline("shapes")
    base = generate(pipe)
    # The in-training model: the run's last checkpoint in the factors the recipe trains, unfused.
    state = load_checkpoint(latest_checkpoint(trained))["modules"]["lora"]
    network = lora_type().Trainable.for_components(
        pipe.components, {"denoiser": ["attention"], "text_encoder": ["attention"]}, rank=2)
    network.load_state_dict(state)
    network.attach(pipe.components)
    with torch.no_grad():
        live = generate(pipe)
    network.detach()
    assert (live.decoded - base.decoded).abs().mean() > 0.01  # three steps at lr 1e-2 moved the model
    assert (trained / "samples" / "step-00000003.png").is_file()  # the grid of the LoRA'd model

    for name in ("lora.safetensors", "lora.kohya.safetensors"):
        pipe.load_adapter(trained / name)
        loaded = generate(pipe)
        pipe.remove_adapter(0)
        assert (loaded.decoded - live.decoded).abs().max() <= 1e-5, name
        assert np.array_equal(np.asarray(loaded.images[0]), np.asarray(live.images[0])), name

    layers = sfumato.load_weights(trained / "lora.kohya.safetensors")
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj") for k in layers)
    assert "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.alpha" in layers
    out = tmp_path / "cli.png"
    assert main(["generate", "a red star", "--model", "shapes", "--lora", str(trained / "lora.safetensors"),
                 "--steps", "4", "--seed", "1", "--out", str(out), "--no-progress"]) == 0
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(live.images[0]))


def test_stopping_and_resuming_gives_bitwise_the_uninterrupted_lora(stars, tmp_path):
    spec = load_spec(lora_spec(stars, {"condition_dropout": 0.3}, steps=4, checkpoint_every=2,
                               lr_schedule="cosine", warmup_steps=1), sfumato.get_registry())
    whole = sfumato.train(spec, out=tmp_path / "whole")

    class Stop(sfumato.TrainCallback):
        def on_step_end(self, step):
            if step == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sfumato.train(spec, out=tmp_path / "split", callbacks=[Stop()])
    resumed = sfumato.train(spec, out=tmp_path / "split", resume=True)
    assert resumed.resumed_from == 2
    for name in ("lora.safetensors", "lora.kohya.safetensors"):
        a, b = sfumato.load_weights(whole.out / name), sfumato.load_weights(resumed.out / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert [m["loss"] for m in whole.metrics] == [m["loss"] for m in resumed.metrics]


def test_base_weights_stay_frozen_and_factors_start_at_the_base_model():
    pipe = sfumato.load_pipeline("shapes")
    unet = pipe.components["denoiser"].requires_grad_(False)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    network = lora_type().Trainable.for_components(pipe.components, {"denoiser": ["conv", "to_k"]}, rank=3, alpha=6)
    convs = [f for f in network.factors.values() if f.down.ndim == 4]
    assert convs and all(f.up.shape[2:] == (1, 1) for f in convs)  # LoCon on the 3x3 convolutions
    assert {f.module.rsplit(".", 1)[-1] for f in network.factors.values() if f.down.ndim == 2} == {"to_k"}
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([500.0, 20.0])
    cond = sfumato.Conditioning(tokens=torch.randn(2, 5, 64))
    plain = unet(x, t, cond)
    network.attach(pipe.components)
    assert torch.equal(unet(x, t, cond), plain)  # up = 0: training starts from the base model
    for factors in network.factors.values():
        factors.up.data.normal_(0, 0.1)
    unet(x, t, cond).square().mean().backward()
    assert all(f.down.grad is not None and f.down.grad.abs().sum() > 0 for f in network.factors.values())
    assert all(p.grad is None for p in unet.parameters())
    network.detach()
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())


def test_dreambooth_prior_preservation_trains_on_class_images_the_base_model_drew(stars, tmp_path):
    task = {"instance_prompt": "a red star", "class_prompt": "a red circle", "class_images": str(tmp_path / "class"),
            "num_class_images": 2, "prior_loss_weight": 0.5}
    spec = lora_spec(stars, task, steps=2, seed=7)
    spec["scheduler"]["steps"] = 4
    result = sfumato.train(load_spec(spec, sfumato.get_registry()), out=tmp_path / "run")
    assert {"prior_mse", "mse"} <= result.metrics[-1].keys()
    drawn = sorted((tmp_path / "class").glob("*.png"))
    assert [p.name for p in drawn] == ["class-0000.png", "class-0001.png"]
    pipe = sfumato.load_pipeline("shapes", {"scheduler.steps": 4})
    pipe.guidance = []  # the training spec has no [[guidance]]
    expected = sfumato.generate(pipe, ["a red circle"] * 2, seeds=[7 * 1_000_003, 7 * 1_000_003 + 1], progress=False)
    for path, image in zip(drawn, expected.images):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))


def test_class_prompts_as_a_list_draw_and_train_each_class_image_with_its_own_prompt(stars, tmp_path, monkeypatch):
    """Prior preservation over several classes: class image i is drawn from, and trained with,
    prompt i modulo the list (builds/shapes_lora/prior.toml keeps circles, squares and triangles)."""
    from sfumato_recipes.lora_task import LoRARecipe

    prompts = ["a red circle", "a blue square"]
    task = {"class_prompt": prompts, "class_images": str(tmp_path / "class"), "num_class_images": 3}
    spec = lora_spec(stars, task, steps=2, seed=7)
    spec["scheduler"]["steps"] = 4
    captions_seen, indices_seen = [], []
    encode, loss = LoRARecipe.encode_text, LoRARecipe.loss

    def recording_encode(self, captions):
        captions_seen.append(list(captions))
        return encode(self, captions)

    def recording_loss(self, batch, ctx):
        indices_seen.append(batch["index"].tolist())
        return loss(self, batch, ctx)

    monkeypatch.setattr(LoRARecipe, "encode_text", recording_encode)
    monkeypatch.setattr(LoRARecipe, "loss", recording_loss)
    sfumato.train(load_spec(spec, sfumato.get_registry()), out=tmp_path / "run")
    pipe = sfumato.load_pipeline("shapes", {"scheduler.steps": 4})
    pipe.guidance = []  # the training spec has no [[guidance]]
    seeds = [7 * 1_000_003 + i for i in range(3)]
    expected = sfumato.generate(pipe, ["a red circle", "a blue square", "a red circle"], seeds=seeds, progress=False)
    for i, image in enumerate(expected.images):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "class" / f"class-{i:04d}.png")), np.asarray(image))
    assert len(indices_seen) == 2 and len(captions_seen) == 2
    for captions, batch in zip(captions_seen, indices_seen):  # 2 instance rows, then their 2 class rows
        assert captions[2:] == [prompts[(index % 3) % 2] for index in batch]
        assert all(caption.endswith(" star") for caption in captions[:2])
    with pytest.raises(sfumato.SpecError, match="class_prompt is an empty list"):
        load_spec(lora_spec(stars, {"class_prompt": [], "class_images": str(tmp_path / "c")}), sfumato.get_registry())


def test_target_modules_that_match_nothing_are_refused_with_the_choices(stars, tmp_path):
    spec = load_spec(lora_spec(stars, {"target_modules": ["attention", "to_kk"]}), sfumato.get_registry())
    with pytest.raises(sfumato.SpecError, match=r"\['to_kk'\] match no layer of \[denoiser\].*cross-attention"):
        sfumato.train(spec, out=tmp_path / "run")
    with pytest.raises(sfumato.SpecError, match="class_prompt and class_images"):
        load_spec(lora_spec(stars, {"class_prompt": "a circle"}), sfumato.get_registry())
    (tmp_path / "a-file").write_text("")
    spec = load_spec(lora_spec(stars, {"class_prompt": "a circle", "class_images": str(tmp_path / "a-file")}),
                     sfumato.get_registry())
    with pytest.raises(sfumato.SpecError, match="class_images = .*a-file' is a file; give a folder"):
        sfumato.train(spec, out=tmp_path / "run-2")


def test_overwrite_removes_an_earlier_runs_kohya_file_too(tmp_path):
    """The recipe's ``output_files`` reach ``--overwrite``: no stale kohya file beside a new run."""
    from sfumato.training.run_folder import remove_run_outputs
    from sfumato_recipes.lora_task import LoRARecipe

    for name in ("lora.safetensors", "lora.kohya.safetensors", "lora.no-ema.kohya.safetensors", "notes.txt"):
        (tmp_path / name).write_text("earlier run")
    remove_run_outputs(tmp_path, {"lora"}, LoRARecipe.output_files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
