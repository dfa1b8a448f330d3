"""Zero-shot classification, semantic search and the fine-tuning model, with stub and tiny
encoders whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import sfumato
import torch
from PIL import Image
from sfumato import EncoderOutput
from sfumato_clip import CLIPFineTuner, SearchIndex, ZeroShotClassifier, build_index, class_embeddings, query_text

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


def test_fine_tuner_freezes_towers_and_trains_heads(tiny_clip_file):
    text = sfumato.build("encoder", {"type": "clip-text", "weights": tiny_clip_file})
    image = sfumato.build("encoder", {"type": "clip-image", "weights": tiny_clip_file})
    model = CLIPFineTuner(text, image, projection_dim=8, caption_loss="siglip")
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    loss = model.caption_loss(images, ["a cat", "a dog", "a car"])
    loss.backward()
    assert all(p.grad is None for p in text.parameters()) and all(p.grad is None for p in image.parameters())
    assert model.image_head.proj.weight.grad is not None and model.logit_bias.grad is not None
    logits = model.label_logits(images, ["cat", "dog"])
    assert logits.shape == (3, 2)
    label_loss = model.label_loss(images, torch.tensor([0, 1, 0]), ["cat", "dog"])
    assert label_loss.item() > 0


@pytest.mark.parametrize("caption_loss", ["clip", "soft-target"])
def test_fine_tuner_can_train_the_towers(tiny_clip_file, caption_loss):
    text = sfumato.build("encoder", {"type": "clip-text", "weights": tiny_clip_file})
    image = sfumato.build("encoder", {"type": "clip-image", "weights": tiny_clip_file})
    model = CLIPFineTuner(text, image, projection_dim=8, train_text=True, train_image=True,
                          caption_loss=caption_loss)
    model.caption_loss(torch.rand(2, 3, 32, 32) * 2 - 1, ["a cat", "a dog"]).backward()
    assert text.text.blocks[0].attn.qkv.weight.grad is not None
    assert image.vision.patch_embed.weight.grad is not None
