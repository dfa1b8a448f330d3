"""Each recipe learns: a few steps on one fixed batch (the whole 8-image folder) lower its loss,
and the trained weights come back through the spec the run writes."""

from __future__ import annotations

import math

import pytest
import torch

import sfumato
from sfumato_training_helpers import CLIP_IMAGE, CLIP_TEXT, UNET, VAE, losses, run, train_spec

CLASSIFIER = {"type": "noise-classifier", "num_classes": 2, "channels": [16, 32], "norm_groups": 8}
TEXT_UNET = {**UNET, "in_channels": 2, "out_channels": 2, "attention": [False, True], "cross_attention_dim": 64}

RECIPES = {
    "diffusion-class": ({"type": "train-diffusion", "conditioning": "class"},
                        {"denoiser": {**UNET, "num_classes": 2, "null_class": True}, "diffusion": {"timesteps": 100}}),
    "diffusion-latent-text-v-minsnr": (
        {"type": "train-diffusion", "conditioning": "text", "min_snr_gamma": 5.0},
        {"denoiser": TEXT_UNET, "autoencoder": VAE, "text_encoder": CLIP_TEXT,
         "diffusion": {"timesteps": 100, "prediction": "v"}}),
    "vae": ({"type": "train-vae", "kl_weight": 1e-4}, {"autoencoder": VAE}),
    "classifier": ({"type": "train-classifier", "max_timestep": 50},
                   {"classifier": CLASSIFIER, "diffusion": {"timesteps": 100}}),
    "clip": ({"type": "train-clip"}, {"text_encoder": CLIP_TEXT, "image_encoder": CLIP_IMAGE,
                                      "train": {"lr_schedule": "constant"}}),
    "clip-finetune-labels": ({"type": "train-clip-finetune", "projection_dim": 32},
                             {"text_encoder": CLIP_TEXT, "image_encoder": CLIP_IMAGE, "train": {"epochs": None}}),
    "clip-finetune-captions": ({"type": "train-clip-finetune", "objective": "captions", "projection_dim": 32},
                               {"text_encoder": CLIP_TEXT, "image_encoder": CLIP_IMAGE}),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_overfits_a_fixed_batch(name, class_folder, tmp_path):
    task, tables = RECIPES[name]
    result = run(train_spec(task, class_folder, steps=8, **tables), tmp_path)
    curve = losses(result)
    assert len(curve) == 8 and all(math.isfinite(v) for v in curve)
    start, end = sum(curve[:2]) / 2, sum(curve[-2:]) / 2
    assert end < 0.85 * start, f"{name}: loss {curve}"
    for path in result.weights.values():
        assert path.is_file()


def test_trained_spec_points_at_the_new_weights(class_folder, tmp_path):
    task, tables = RECIPES["diffusion-class"]
    result = run(train_spec(task, class_folder, steps=2, **tables), tmp_path)
    spec = sfumato.load_pipeline(tmp_path / "trained.toml", overrides=["task.type=class-to-image",
                                                                      "scheduler.type=ddim", "scheduler.steps=2"])
    saved = sfumato.load_weights(result.weights["denoiser"])
    for key, value in spec.denoiser.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert sfumato.read_component_spec(result.weights["denoiser"])["num_classes"] == 2
    image = spec(labels=1, height=16, width=16, progress=False).images[0]
    assert image.size == (16, 16)


def test_finetune_defaults_are_five_epochs_of_sixteen_saved_each_epoch(class_folder):
    task = sfumato.build("task", {"type": "train-clip-finetune"})
    assert task.train_defaults() | {"lr": None} == {"epochs": 5, "batch_size": 16, "save_every_epoch": True, "lr": None}
    captions = sfumato.build("task", {"type": "train-clip-finetune", "objective": "captions"})
    assert captions.train_defaults()["epochs"] == 30


def test_finetune_saves_heads_every_epoch_and_keeps_towers_frozen(class_folder, tmp_path):
    task, tables = RECIPES["clip-finetune-labels"]
    spec = train_spec(task, class_folder, steps=None, **{**tables, "train": {"epochs": 2, "steps": None}})
    result = run(spec, tmp_path)
    assert result.steps == 2  # 8 images, batch 8, two epochs
    assert sorted(p.name for p in tmp_path.glob("epoch-*/*.safetensors")) == ["heads.safetensors"] * 2
    assert set(result.weights) == {"heads"}  # frozen towers are not saved


def test_class_dropout_needs_a_null_class(class_folder, tmp_path):
    task, tables = RECIPES["diffusion-class"]
    tables = {**tables, "denoiser": {**UNET, "num_classes": 2}}
    with pytest.raises(sfumato.SpecError, match="null_class = true"):
        run(train_spec(task, class_folder, **tables), tmp_path)


def test_min_snr_weights_follow_the_parameterisation():
    from sfumato_recipes.diffusion_task import min_snr_weight

    snr = torch.tensor([0.0, 1.0, 5.0, 20.0])
    assert torch.allclose(min_snr_weight(snr, 5.0, "epsilon"), torch.tensor([1.0, 1.0, 1.0, 0.25]))
    assert torch.allclose(min_snr_weight(snr, 5.0, "v"), torch.tensor([0.0, 0.5, 5 / 6, 5 / 21]))
    assert torch.allclose(min_snr_weight(snr, 5.0, "sample"), torch.tensor([0.0, 1.0, 5.0, 5.0]))


def test_cifar10_finetune_scores_against_the_dataset_label_names(tmp_path):
    """CIFAR-10 python batches (two images per batch, labels 0..9) with the task's defaults except
    the batch size: 1 epoch, prompts from the dataset's label names, weights saved per epoch."""
    import pickle

    import numpy as np

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        with open(root / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [2 * i - 2, 2 * i - 1]}, f)
    spec = {"task": {"type": "train-clip-finetune", "projection_dim": 16},
            "dataset": {"type": "cifar10", "root": str(root)},
            "text_encoder": CLIP_TEXT, "image_encoder": CLIP_IMAGE,
            "train": {"batch_size": 5, "epochs": 1, "progress": False, "log_every": 1}}
    result = run(spec, tmp_path / "out")
    assert result.steps == 2  # 10 images, batch 5
    assert (tmp_path / "out" / "epoch-1" / "heads.safetensors").is_file()
    task = sfumato.build("task", spec["task"])
    dataset = sfumato.build("dataset", spec["dataset"])
    assert task.label_prompts(dataset)[:2] == ["a photo of an airplane", "a photo of an automobile"]
    named = sfumato.build("task", {**spec["task"], "label_template": "{} picture"})
    assert named.label_prompts(dataset)[1] == "automobile picture"
    assert all(0 <= r["accuracy"] <= 1 for r in result.metrics)


def test_flickr8k_finetune_learns_caption_matching(tmp_path):
    """The Kaggle Flickr8k layout (Images/ + captions.txt, five captions per image): the captions
    objective with its defaults but a short run; each image's captions name its colour."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200), "yellow": (220, 220, 40)}
    rows = ["image,caption"]
    (tmp_path / "Images").mkdir()
    for name, colour in colours.items():
        pixels = np.clip(np.array(colour) + rng.normal(0, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(tmp_path / "Images" / f"{name}.jpg")
        rows += [f"{name}.jpg,a {name} square number {k}" for k in range(5)]
    (tmp_path / "captions.txt").write_text("\n".join(rows) + "\n")
    spec = {"task": {"type": "train-clip-finetune", "objective": "captions", "projection_dim": 16},
            "dataset": {"type": "flickr8k", "root": str(tmp_path), "split": "all", "resolution": 16},
            "text_encoder": CLIP_TEXT, "image_encoder": CLIP_IMAGE,
            "train": {"batch_size": 4, "epochs": 10, "progress": False, "log_every": 1}}
    result = run(spec, tmp_path / "out")
    assert result.steps == 10  # 4 images, batch 4: one step per epoch
    curve = losses(result)
    assert sum(curve[-3:]) / 3 < 0.8 * sum(curve[:3]) / 3, curve
    assert len(list((tmp_path / "out").glob("epoch-*/heads.safetensors"))) == 10


def test_info_nce_with_distinct_groups_is_the_plain_loss():
    from sfumato_recipes.contrastive import caption_groups, info_nce

    torch.manual_seed(0)
    images, texts, scale = torch.randn(5, 8), torch.randn(5, 8), torch.tensor(12.0)
    groups = caption_groups(["a", "b", "c", "d", "e"])
    plain, grouped = info_nce(images, texts, scale), info_nce(images, texts, scale, groups)
    assert torch.allclose(plain[0], grouped[0], atol=1e-6) and plain[1] == grouped[1]


def test_info_nce_counts_identical_captions_as_positives():
    """Two pairs of duplicates embedded perfectly: plain InfoNCE calls half the retrievals wrong
    and its gradient pulls duplicates apart; grouped, every retrieval is right and the loss sits at
    its minimum (the entropy of the uniform target over two positives, log 2)."""
    from sfumato_recipes.contrastive import caption_groups, info_nce

    e = torch.eye(2, 8)
    images = torch.stack([e[0], e[0], e[1], e[1]]).requires_grad_()
    texts = images.detach().clone()
    groups = caption_groups(["a digit 1", "a digit 1", "a digit 2", "a digit 2"])
    loss, accuracy = info_nce(images, texts, torch.tensor(100.0), groups)
    assert accuracy.item() == 1.0 and abs(loss.item() - math.log(2)) < 1e-4
    loss.backward()
    assert images.grad.abs().max().item() < 1e-4  # nothing to push apart
    assert info_nce(images.detach(), texts, torch.tensor(100.0))[1].item() == 0.5
    swapped = texts[[2, 3, 0, 1]]  # every caption now sits with the other digit's images
    assert info_nce(images.detach(), swapped, torch.tensor(100.0), groups)[0].item() > 50


def test_train_clip_can_lock_the_text_tower(class_folder, tmp_path):
    """A locked text tower (from weights) stays bitwise unchanged and is not saved; the image
    tower and the temperature train."""
    text = sfumato.build("encoder", CLIP_TEXT)
    sfumato.save_component(text, tmp_path / "text.safetensors")
    before = {k: v.clone() for k, v in text.state_dict().items()}
    tables = {"text_encoder": {**CLIP_TEXT, "weights": str(tmp_path / "text.safetensors")}, "image_encoder": CLIP_IMAGE,
              "train": {"lr_schedule": "constant"}}
    result = run(train_spec({"type": "train-clip", "train_text": False}, class_folder, steps=6, **tables), tmp_path / "run")
    assert set(result.weights) == {"image_encoder", "temperature"}
    reloaded = sfumato.load_weights(tmp_path / "text.safetensors")
    assert all(torch.equal(before[k], reloaded[k]) for k in before)
    curve = losses(result)
    assert curve[-1] < curve[0]


def test_train_clip_refuses_a_locked_random_tower_and_locking_both(class_folder, tmp_path):
    tables = {"text_encoder": CLIP_TEXT, "image_encoder": CLIP_IMAGE}
    with pytest.raises(sfumato.SpecError, match="no weights"):
        run(train_spec({"type": "train-clip", "train_image": False}, class_folder, **tables), tmp_path)
    with pytest.raises(Exception, match="nothing would train"):
        run(train_spec({"type": "train-clip", "train_text": False, "train_image": False}, class_folder, **tables),
            tmp_path)


def test_cached_latents_encode_each_item_once_and_train_the_same(class_folder, tmp_path, monkeypatch):
    from sfumato_vae.autoencoder_kl import AutoencoderKL

    task, tables = RECIPES["diffusion-latent-text-v-minsnr"]
    encoded = []
    original = AutoencoderKL.encode
    monkeypatch.setattr(AutoencoderKL, "encode", lambda self, images, *a, **k: encoded.append(len(images))
                        or original(self, images, *a, **k))
    plain = losses(run(train_spec(task, class_folder, steps=3, **tables), tmp_path / "plain"))
    assert encoded == [8, 8, 8]
    encoded.clear()
    cached = losses(run(train_spec({**task, "cache_latents": True}, class_folder, steps=3, **tables), tmp_path / "cached"))
    assert encoded == [8]  # the 8-image folder is one batch: encoded at step 1, reused at steps 2 and 3
    assert cached == plain


def test_cached_latents_need_an_autoencoder(class_folder, tmp_path):
    task, tables = RECIPES["diffusion-class"]
    with pytest.raises(sfumato.SpecError, match="cache_latents = true caches an \\[autoencoder\\]"):
        run(train_spec({**task, "cache_latents": True}, class_folder, **tables), tmp_path)
