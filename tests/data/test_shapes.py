"""The shapes dataset: seeded determinism, resolutions, captions from the vocabulary, attributes
that match the pixels (checked by the detector)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from sfumato.testing import ComponentConformance

from sfumato_data import (
    COLORS,
    NUMBER_WORDS,
    REGIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    ShapesDataset,
    detect_shapes,
    spatial_relations,
)


class TestShapesConformance(ComponentConformance):
    kind = "dataset"
    spec = {"type": "shapes", "resolution": 16, "length": 4}
    component_class = ShapesDataset


def shapes(**fields) -> ShapesDataset:
    return ShapesDataset.from_spec({"resolution": 64, "length": 40, **fields})


def test_item_is_identical_for_the_same_seed_and_index_in_any_order_and_length():
    a, b = shapes(seed=3), shapes(seed=3, length=1000)
    late_first = b[7]
    for index in (7, 0, 39):
        x, y = a[index], b[index] if index != 7 else late_first
        assert torch.equal(x["image"], y["image"])
        assert x["caption"] == y["caption"] and x["attributes"] == y["attributes"]


def test_another_seed_gives_other_scenes():
    a, b = shapes(seed=0), shapes(seed=1)
    assert sum(a[i]["attributes"] != b[i]["attributes"] for i in range(10)) >= 8


@pytest.mark.parametrize("resolution", [16, 37, 64])
def test_images_have_the_requested_resolution_and_range(resolution):
    image = shapes(resolution=resolution)[2]["image"]
    assert image.shape == (3, resolution, resolution) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    # the light grey background fills the corners: (235 / 127.5) - 1
    assert image[:, 0, 0].tolist() == pytest.approx([235 / 127.5 - 1] * 3)


def test_index_out_of_range_raises_index_error():
    with pytest.raises(IndexError, match="length 40"):
        shapes()[40]


def test_detector_recovers_every_generated_object_at_64_pixels():
    data = shapes(length=60)
    for index in range(len(data)):
        item = data[index]
        expected = sorted(item["attributes"]["objects"], key=lambda o: o["center"][0])
        found = detect_shapes(item["image"])
        assert [(o["shape"], o["color"], o["size"]) for o in found] == [
            (o["shape"], o["color"], o["size"]) for o in expected
        ], f"item {index}: {item['caption']}"
        for got, want in zip(found, expected):
            assert got["center"] == pytest.approx(want["center"], abs=0.03)
            assert got["bbox"] == pytest.approx(want["bbox"], abs=0.04)


def test_captions_use_only_the_vocabulary():
    vocabulary = {"a", "an", "and", "the", "of", "to", "on", "at", "in"}
    vocabulary |= set(SHAPES) | {s + "s" for s in SHAPES} | set(COLORS) | set(SIZES)
    vocabulary |= set(NUMBER_WORDS.values())
    for phrase in list(RELATIONS.values()) + list(REGIONS.values()):
        vocabulary |= set(phrase.split())
    data = shapes(length=80)
    for index in range(len(data)):
        item = data[index]
        assert item["caption"] in item["captions"]
        for caption in item["captions"]:
            words = set(caption.replace(",", "").split())
            assert words <= vocabulary, f"{caption!r} has {words - vocabulary}"
            assert " a orange" not in caption and " a a" not in caption


def test_pair_captions_state_the_relation_between_the_object_centres():
    data = shapes(scenes=["pair"], length=30)
    for index in range(len(data)):
        attributes = data[index]["attributes"]
        first, second = attributes["objects"]
        relation = attributes["relation"]
        assert relation in spatial_relations(first["center"], second["center"])
        assert [0, relation, 1] in attributes["relations"]
        assert first["shape"] != second["shape"] and first["color"] != second["color"]
        lead = f"{'an' if first['color'] == 'orange' else 'a'} {first['color']} {first['shape']}"
        assert f"{lead} {RELATIONS[relation]} " in data[index]["captions"][0]


def test_counting_scenes_repeat_one_shape_and_colour_and_say_how_many():
    data = shapes(scenes=["count"], length=20)
    counts = set()
    for index in range(len(data)):
        item = data[index]
        objects = item["attributes"]["objects"]
        assert len({(o["shape"], o["color"]) for o in objects}) == 1
        n, shape, color = len(objects), objects[0]["shape"], objects[0]["color"]
        assert item["captions"][0] == f"{NUMBER_WORDS[n]} {color} {shape}s"
        assert item["attributes"]["counts"][shape] == n and item["attributes"]["color_counts"][color] == n
        counts.add(n)
    assert counts == {2, 3, 4}


def test_single_objects_sit_in_the_region_their_caption_names():
    data = shapes(scenes=["single"], length=20)
    for index in range(len(data)):
        item = data[index]
        (obj,) = item["attributes"]["objects"]
        assert obj["region"] is not None
        assert item["captions"][0].endswith(REGIONS[obj["region"]])


def test_max_objects_bounds_scenes_and_spec_rejects_impossible_kinds():
    data = shapes(max_objects=2, scenes=["single", "pair", "count"], length=30)
    assert max(len(data[i]["attributes"]["objects"]) for i in range(30)) == 2
    with pytest.raises(ValidationError, match="max_objects"):
        ShapesDataset.Spec(scenes=["mixed"], max_objects=2)
    with pytest.raises(ValidationError, match="at least one"):
        ShapesDataset.Spec(scenes=[])
