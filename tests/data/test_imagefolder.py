"""The image-folder loader in its three layouts: metadata.jsonl, captions.csv, class folders."""

from __future__ import annotations

import json

import pytest
import sfumato

from sfumato_data import DatasetError, ImageFolderDataset


def build(root, **fields) -> ImageFolderDataset:
    return ImageFolderDataset.from_spec({"root": str(root), "resolution": 8, **fields})


def test_metadata_jsonl_like_hugging_face_imagefolder(tmp_path, image_writer):
    image_writer(tmp_path / "a.png", (255, 0, 0))
    image_writer(tmp_path / "sub" / "b.jpg", (0, 0, 255))
    rows = [{"file_name": "a.png", "text": "a red square"},
            {"file_name": "sub/b.jpg", "text": ["a blue square", "blue"]}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = build(tmp_path)
    assert len(data) == 2
    assert data[0]["caption"] == "a red square" and "label" not in data[0]
    assert data[1]["captions"] == ["a blue square", "blue"]
    assert data[0]["image"][:, 4, 4].tolist() == [1.0, -1.0, -1.0]


def test_captions_csv_with_several_rows_per_image(tmp_path, image_writer):
    image_writer(tmp_path / "x.png", (0, 0, 0))
    (tmp_path / "captions.csv").write_text('file_name,text\nx.png,"dark, very dark"\nx.png,black\n')
    data = build(tmp_path)
    assert len(data) == 1 and data[0]["captions"] == ["dark, very dark", "black"]


def test_class_folders_give_sorted_labels_and_template_captions(tmp_path, image_writer):
    for cls, count in {"zebra": 2, "apple": 3}.items():
        for i in range(count):
            image_writer(tmp_path / cls / f"{i}.png", (10 * i, 0, 0))
    (tmp_path / "apple" / "notes.txt").write_text("not an image")
    data = build(tmp_path, hflip=True, crop="random")
    assert data.class_names == ["apple", "zebra"]
    assert [data[i]["label"] for i in range(5)] == [0, 0, 0, 1, 1]
    assert data[0]["caption"] == "a photo of an apple" and data[4]["caption"] == "a photo of a zebra"
    train, val = build(tmp_path, split="train", val_fraction=0.4), build(tmp_path, split="val", val_fraction=0.4)
    assert len(train) == 3 and len(val) == 2
    assert {p for p, _, _ in train.items}.isdisjoint({p for p, _, _ in val.items})


def test_missing_and_malformed_files_are_named(tmp_path, image_writer):
    image_writer(tmp_path / "a.png", (0, 0, 0))
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "x"}\n{"file_name": "gone.png", "text": "y"}\n')
    with pytest.raises(DatasetError, match=r"metadata.jsonl: 1 image\(s\) .*gone.png"):
        build(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "x"}\nnot json\n')
    with pytest.raises(DatasetError, match="metadata.jsonl:2: not a JSON object"):
        build(tmp_path)
    (tmp_path / "metadata.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="metadata.jsonl: the caption file holds no rows"):
        build(tmp_path)


def test_empty_folder_and_bad_root(tmp_path):
    with pytest.raises(DatasetError, match="no images; expected metadata.jsonl"):
        build(tmp_path)
    with pytest.raises(sfumato.SpecError, match="root = .*does not exist"):
        build(tmp_path / "nope")
