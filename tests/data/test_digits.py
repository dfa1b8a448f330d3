"""The digits dataset: scikit-learn's 8 x 8 digits upscaled, with labels, captions and a
deterministic split."""

from __future__ import annotations

import sfumato
import torch
from sfumato.testing import ComponentConformance

from sfumato_data import DigitsDataset


class TestDigitsConformance(ComponentConformance):
    kind = "dataset"
    spec = {"type": "digits", "resolution": 8}
    component_class = DigitsDataset


def test_items_are_upscaled_white_digits_on_black_with_labels_and_captions():
    data = DigitsDataset.from_spec({"resolution": 32})
    item = data[0]
    assert item["image"].shape == (3, 32, 32)
    assert torch.equal(item["image"][0], item["image"][2])  # grey
    assert item["image"][:, 0, 0].tolist() == [-1.0, -1.0, -1.0]  # the border has no ink
    assert item["image"].max() > 0.9
    assert item["caption"] == f"a handwritten digit {item['label']}"
    # the template text-to-image digits models are prompted with, read through the registry
    template = sfumato.get_registry().get("dataset", "digits").caption_template
    assert template.format(item["label"]) == item["caption"]
    assert {data[i]["label"] for i in range(len(data))} == set(range(10))


def test_train_and_test_split_the_1797_digits_deterministically():
    train = DigitsDataset.from_spec({"resolution": 8, "split": "train"})
    test = DigitsDataset.from_spec({"resolution": 8, "split": "test"})
    everything = DigitsDataset.from_spec({"resolution": 8, "split": "all"})
    assert len(train) + len(test) == len(everything) == 1797
    assert len(test) == round(0.2 * 1797)
    again = DigitsDataset.from_spec({"resolution": 8, "split": "test"})
    assert torch.equal(test.images, again.images)
    reseeded = DigitsDataset.from_spec({"resolution": 8, "split": "test", "seed": 1})
    assert not torch.equal(test.images, reseeded.images)


def test_native_resolution_keeps_the_16_grey_levels():
    data = DigitsDataset.from_spec({"resolution": 8, "split": "all"})
    levels = torch.unique((data[5]["image"] + 1) / 2 * 16)
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert data[5]["label"] == 5  # load_digits is ordered 0, 1, ..., 9, 0, ...
