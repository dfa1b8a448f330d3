"""The CIFAR-10 loader on miniature batches pickled exactly like the official python version."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import sfumato

from sfumato_data import Cifar10Dataset, DatasetError

LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_batch(path, count: int, first_label: int = 0) -> np.ndarray:
    rng = np.random.default_rng(count + first_label)
    data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    labels = [(first_label + i) % 10 for i in range(count)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"training batch", b"labels": labels, b"data": data,
                     b"filenames": [b"x.png"] * count}, f)
    return data


@pytest.fixture
def cifar(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"num_cases_per_batch": 3, b"label_names": LABEL_NAMES, b"num_vis": 3072}, f)
    batches = [write_batch(root / f"data_batch_{i}", 3, first_label=3 * (i - 1)) for i in range(1, 6)]
    test = write_batch(root / "test_batch", 2)
    return tmp_path, batches, test


def test_train_split_reads_all_five_batches_with_labels_and_prompts(cifar):
    root, batches, _ = cifar
    data = Cifar10Dataset.from_spec({"root": str(root)})
    assert len(data) == 15
    assert [data[i]["label"] for i in range(4)] == [0, 1, 2, 3]
    assert data[0]["caption"] == "a photo of an airplane"
    assert data[1]["caption"] == "a photo of an automobile"
    assert data[2]["caption"] == "a photo of a bird"


def test_pixels_come_from_row_major_rgb_planes(cifar):
    root, batches, _ = cifar
    image = Cifar10Dataset.from_spec({"root": str(root / "cifar-10-batches-py")})[4]["image"]
    raw = batches[1][1]  # item 4 is the second row of data_batch_2
    assert image.shape == (3, 32, 32)
    for channel, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        expected = raw[channel * 1024 + y * 32 + x] / 127.5 - 1
        assert image[channel, y, x].item() == pytest.approx(expected, abs=1e-6)


def test_test_split_resolution_and_template(cifar):
    root, _, _ = cifar
    data = Cifar10Dataset.from_spec({"root": str(root), "split": "test", "resolution": 16,
                                     "caption_template": "{label}"})
    assert len(data) == 2 and data[1]["image"].shape == (3, 16, 16)
    assert data[1]["caption"] == "automobile"


def test_missing_root_is_a_spec_error_naming_the_path(tmp_path):
    with pytest.raises(sfumato.SpecError, match="nowhere"):
        Cifar10Dataset.from_spec({"root": str(tmp_path / "nowhere")})


def test_missing_batch_and_wrong_shapes_name_the_file(cifar):
    root, _, _ = cifar
    folder = root / "cifar-10-batches-py"
    (folder / "test_batch").unlink()
    with pytest.raises(DatasetError, match="test_batch: missing"):
        Cifar10Dataset.from_spec({"root": str(root), "split": "test"})
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match=r"data_batch_3: b'data' must be uint8 \[N, 3072\]"):
        Cifar10Dataset.from_spec({"root": str(root)})
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_3: not a CIFAR-10 python pickle"):
        Cifar10Dataset.from_spec({"root": str(root)})
