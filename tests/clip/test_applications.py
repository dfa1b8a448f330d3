"""Zero-shot classification, semantic search and fine-tuning (the ``train-clip-finetune`` recipe,
sfumato's one implementation), with stub and tiny encoders whose answers are known."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import sfumato
import torch
from PIL import Image
from sfumato import EncoderOutput
from sfumato_clip import SearchIndex, ZeroShotClassifier, build_index, class_embeddings, query_text
from sfumato_recipes.clip_tasks import CLIPFinetuneRecipe, FinetuneHeads, TrainCLIPFinetune
from sfumato_training_helpers import run, train_spec, write_class_folder

COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}


class ColourText(torch.nn.Module):
    """Embeds a prompt as the one-hot of the colour word it contains."""

    def encode(self, prompts):
        pooled = torch.tensor([[float(c in p) for c in COLOURS] for p in prompts])
        return EncoderOutput(tokens=pooled[:, None], pooled=pooled)


class ColourImage(torch.nn.Module):
    """Embeds an image as its mean colour, so a red image is nearest to 'red'."""

    image_size = 8
    embed_dim = 3

    def encode(self, images):
        pooled = images.mean(dim=(2, 3)) + 1  # (B, 3) in [0, 2]
        return EncoderOutput(tokens=pooled[:, None], pooled=pooled)


def solid(colour: str, size: int = 8) -> torch.Tensor:
    return torch.tensor(COLOURS[colour]).view(3, 1, 1).expand(3, size, size)


def test_class_embeddings_are_normalised_template_means():
    weights = class_embeddings(ColourText(), ["red", "blue"], ("a {}", "a photo of {} things"))
    assert weights.shape == (2, 3)
    assert torch.allclose(weights.norm(dim=-1), torch.ones(2))
    assert weights[0].argmax().item() == 0 and weights[1].argmax().item() == 2


def test_zero_shot_picks_the_right_colour():
    classifier = ZeroShotClassifier(ColourText(), ColourImage(), ["red", "green", "blue"])
    images = torch.stack([solid("blue"), solid("red"), solid("green")])
    predictions = classifier.predict(images, k=2)
    assert [p.labels[0] for p in predictions] == ["blue", "red", "green"]
    assert all(p.probs[0] > p.probs[1] for p in predictions)
    assert classifier.logits(images).argmax(1).tolist() == [2, 0, 1]


def _write_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        colour = name.split("_")[0]
        pixels = ((np.array(COLOURS[colour]) + 1) * 127.5).astype(np.uint8)
        Image.fromarray(np.tile(pixels, (12, 16, 1))).save(folder / f"{name}.png")


def test_search_index_round_trip_and_text_query(tmp_path):
    _write_images(tmp_path / "images", ["red_1", "green_1", "blue_1", "red_2"])
    index = build_index(ColourImage(), tmp_path / "images", batch_size=3, progress=False)
    assert index.files == ["blue_1.png", "green_1.png", "red_1.png", "red_2.png"]
    index.save(tmp_path / "index.safetensors")
    loaded = SearchIndex.load(tmp_path / "index.safetensors")
    assert loaded.files == index.files and torch.equal(loaded.embeddings, index.embeddings)
    hits = query_text(loaded, ColourText(), "a red car", k=2)
    assert sorted(h.file for h in hits) == ["red_1.png", "red_2.png"]
    assert hits[0].score >= hits[1].score


def finetune_recipe(clip_file: str, **fields) -> CLIPFinetuneRecipe:
    """The ``train-clip-finetune`` recipe on a tiny CLIP's towers, classes "cat" and "dog"."""
    text = sfumato.build("encoder", {"type": "clip-text", "weights": clip_file})
    image = sfumato.build("encoder", {"type": "clip-image", "weights": clip_file})
    task = TrainCLIPFinetune(TrainCLIPFinetune.Spec(projection_dim=8, **fields))
    return CLIPFinetuneRecipe(task.spec, text, image, task.label_prompts(SimpleNamespace(label_names=["cat", "dog"])))


def test_finetuning_trains_the_heads_and_keeps_the_towers_frozen(tiny_clip_file):
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    recipe = finetune_recipe(tiny_clip_file, objective="captions")
    assert set(recipe.trainable) == {"heads"} and set(recipe.frozen) == {"text_encoder", "image_encoder"}
    loss, metrics = recipe.loss({"image": images, "caption": ["a cat", "a dog", "a car"]}, None)
    loss.backward()
    assert all(p.grad is None for p in recipe.text_encoder.parameters())
    assert all(p.grad is None for p in recipe.image_encoder.parameters())
    assert recipe.heads.image_head.proj.weight.grad is not None and recipe.heads.temperature.log_scale.grad is not None
    labels = finetune_recipe(tiny_clip_file)  # objective "labels": each image against every class prompt
    assert labels.prompts == ["a photo of a cat", "a photo of a dog"]
    loss, metrics = labels.loss({"image": images, "label": torch.tensor([0, 1, 0])}, None)
    assert loss.item() > 0 and 0 <= metrics["accuracy"].item() <= 1


def test_finetuning_can_train_the_towers(tiny_clip_file):
    recipe = finetune_recipe(tiny_clip_file, objective="captions", train_text=True, train_image=True)
    assert set(recipe.trainable) == {"heads", "text_encoder", "image_encoder"}
    loss, _ = recipe.loss({"image": torch.rand(2, 3, 32, 32) * 2 - 1, "caption": ["a cat", "a dog"]}, None)
    loss.backward()
    assert recipe.text_encoder.text.blocks[0].attn.qkv.weight.grad is not None
    assert recipe.image_encoder.vision.patch_embed.weight.grad is not None


def test_the_heads_a_finetuning_run_saves_load_back_and_embed(tiny_clip_file, tmp_path):
    folder = write_class_folder(tmp_path / "classes")
    tower = {"weights": tiny_clip_file}
    spec = train_spec({"type": "train-clip-finetune", "projection_dim": 8}, folder, steps=None,
                      text_encoder={"type": "clip-text", **tower}, image_encoder={"type": "clip-image", **tower},
                      train={"epochs": 1, "steps": None})
    result = run(spec, tmp_path / "out")
    heads = FinetuneHeads.load(result.weights["heads"])
    saved = sfumato.load_weights(result.weights["heads"])
    assert not heads.training and all(torch.equal(v, saved[k]) for k, v in heads.state_dict().items())
    text = sfumato.build("encoder", {"type": "clip-text", **tower}).eval()
    image = sfumato.build("encoder", {"type": "clip-image", **tower}).eval()
    with torch.no_grad():
        assert heads.text_head(text.encode(["a photo of a red"]).pooled).shape == (1, 8)
        assert heads.image_head(image.encode(torch.zeros(2, 3, 32, 32)).pooled).shape == (2, 8)
    with pytest.raises(sfumato.WeightsError, match="not the heads of a train-clip-finetune run"):
        FinetuneHeads.load(tiny_clip_file)
