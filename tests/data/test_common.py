"""What every dataset shares: registration, documented specs, transforms, splits, prompts and
batching."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import sfumato
from sfumato_data import DATASETS, ImageTransform, collate_examples, to_image, to_tensor
from sfumato_data.prompts import article, class_prompt
from sfumato_data.splits import split_items


def test_the_plugin_registers_the_five_datasets():
    data = {p.name: p for p in sfumato.plugins()}["data"]
    assert data.status == "ok", data.error
    assert sorted(data.provides["dataset"]) == ["cifar10", "digits", "flickr8k", "imagefolder", "shapes"]
    shapes = sfumato.build("dataset", {"type": "shapes", "resolution": 16, "length": 3})
    assert len(shapes) == 3


@pytest.mark.parametrize("dataset", DATASETS, ids=lambda cls: cls.type_name())
def test_every_spec_field_is_documented(dataset):
    undocumented = [n for n, f in dataset.Spec.model_fields.items() if n != "type" and not f.description]
    assert not undocumented


def test_to_tensor_maps_0_255_to_minus_1_1_and_back():
    image = Image.new("RGB", (3, 2), (0, 128, 255))
    tensor = to_tensor(image)
    assert tensor.shape == (3, 2, 3)
    assert tensor[:, 0, 0].tolist() == pytest.approx([-1.0, 128 / 127.5 - 1, 1.0], abs=1e-6)
    assert to_image(tensor).tobytes() == image.tobytes()


def test_center_crop_keeps_the_middle_of_a_wide_image():
    # 40 x 20: left quarter red, middle half green, right quarter blue.
    image = Image.new("RGB", (40, 20), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 10, 20))
    image.paste((0, 0, 255), (30, 0, 40, 20))
    tensor = ImageTransform(10, "center")(image)
    assert tensor.shape == (3, 10, 10)
    assert torch.allclose(tensor[:, 5, 5], torch.tensor([-1.0, 1.0, -1.0]), atol=0.02)
    squashed = ImageTransform(10, "none")(image)
    assert squashed[0, 5, 0] > 0.9 and squashed[2, 5, 9] > 0.9


def test_flips_and_random_crops_follow_the_torch_seed():
    image = Image.new("RGB", (16, 16), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 4, 16))  # white stripe on the left
    flip = ImageTransform(16, "center", hflip=True)
    torch.manual_seed(0)
    lefts = [flip(image)[0, 0, 0].item() for _ in range(20)]
    assert set(lefts) == {1.0, -1.0}  # sometimes flipped, sometimes not
    torch.manual_seed(0)
    assert [flip(image)[0, 0, 0].item() for _ in range(20)] == lefts
    crop = ImageTransform(8, "random")
    torch.manual_seed(3)
    first = crop(image.resize((32, 16)))
    torch.manual_seed(3)
    assert torch.equal(crop(image.resize((32, 16))), first)


def test_split_items_partitions_without_loss_and_depends_on_the_seed():
    items = list(range(101))
    fractions = {"test": 0.1, "val": 0.1, "train": 0.8}
    parts = [split_items(items, fractions, s, seed=4) for s in fractions]
    assert sorted(sum(parts, [])) == items and [len(p) for p in parts] == [10, 10, 81]
    assert split_items(items, fractions, "test", seed=5) != parts[0]
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        split_items(items, fractions, "dev", seed=0)


@pytest.mark.parametrize("noun, expected", [("airplane", "an"), ("automobile", "an"), ("bird", "a"),
                                            ("orange circle", "an"), ("unicorn", "a"), ("hour", "an")])
def test_article(noun, expected):
    assert article(noun) == expected


def test_class_prompt_fills_label_and_article_and_rejects_unknown_placeholders():
    assert class_prompt("a photo of {article} {label}", "aquarium_fish") == "a photo of an aquarium fish"
    with pytest.raises(sfumato.SpecError, match="caption_template.*'name'"):
        class_prompt("a photo of {name}", "cat")


def test_collate_stacks_images_and_labels_and_keeps_the_rest_as_lists():
    items = [{"image": torch.zeros(3, 4, 4), "label": i, "captions": ["x", "y"], "attributes": {"n": i}}
             for i in range(3)]
    batch = collate_examples(items)
    assert batch["image"].shape == (3, 3, 4, 4) and batch["label"].tolist() == [0, 1, 2]
    assert batch["captions"] == [["x", "y"]] * 3 and batch["attributes"][2] == {"n": 2}
    shapes = sfumato.build("dataset", {"type": "shapes", "resolution": 16, "length": 4})
    loader = torch.utils.data.DataLoader(shapes, batch_size=4, collate_fn=collate_examples)
    assert next(iter(loader))["image"].shape == (4, 3, 16, 16)
