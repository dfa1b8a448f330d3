"""The shapes detector, the judge of ``sfumato eval geneval``: it reads back every object the
``shapes`` dataset draws, with the attributes the dataset records."""

from __future__ import annotations

import pytest
from sfumato_data import ShapesDataset

from sfumato_eval import detect_shapes


def test_detector_recovers_every_generated_object_at_64_pixels():
    data = ShapesDataset.from_spec({"resolution": 64, "length": 60})
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
