"""The shapes dataset: seeded determinism, resolutions, captions from the vocabulary, the
vocabulary other plugins read through the registry. That the attributes match the pixels is
checked by the detector's tests (tests/eval/test_shapes_detector.py)."""

from __future__ import annotations

import pytest
import sfumato
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
    object_phrase,
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


def test_other_plugins_read_the_vocabulary_through_the_registry():
    """The evaluations (another plugin) name objects as the captions do, through the registry."""
    vocabulary = sfumato.get_registry().get("dataset", "shapes").vocabulary
    assert vocabulary.COLORS is COLORS and vocabulary.spatial_relations is spatial_relations
    assert vocabulary.object_phrase is object_phrase
    assert [object_phrase("circle"), object_phrase("square", "orange"), object_phrase("triangle", "red", 3),
            object_phrase("circle", count=2)] == ["a circle", "an orange square", "three red triangles", "two circles"]
    data = shapes(scenes=["single"], length=10)
    for index in range(len(data)):
        item = data[index]
        (obj,) = item["attributes"]["objects"]
        assert object_phrase(obj["shape"], obj["color"]) in item["captions"]
        assert object_phrase(obj["shape"]) in item["captions"]
