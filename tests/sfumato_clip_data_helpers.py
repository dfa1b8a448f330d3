"""Small datasets in their real on-disk formats for the CLIP tests: CIFAR-10 python batches and the
Kaggle Flickr8k layout with the official split lists."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
#: The colours of the Flickr8k fixture's images, by image index modulo 4.
FLICKR_COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 40)]


def write_cifar10(root: Path, per_batch: int = 4, classes: int = 2, seed: int = 0) -> Path:
    """CIFAR-10 python batches in the official format (``cifar-10-batches-py/`` under ``root``):
    ``per_batch`` images a batch, labels drawn from the first ``classes`` classes, each image one
    flat grey whose level is its class; five data batches and a test batch. Returns ``root``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": CIFAR10_NAMES}, f)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, classes, per_batch)]
        data = np.stack([np.full(3072, 40 + 160 * label // max(classes - 1, 1), dtype=np.uint8) for label in labels])
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    return root


def write_flickr8k(root: Path, images: int = 8) -> Path:
    """The Kaggle Flickr8k layout (``Images/`` and ``captions.txt``, five captions an image, some
    with unquoted commas) plus the official split lists: half the images train, a quarter each
    dev and test. Image ``i`` is a flat colour, ``FLICKR_COLOURS[i % 4]``. Returns ``root``."""
    (root / "Images").mkdir(parents=True)
    rows = ["image,caption"]
    for i in range(images):
        colour = FLICKR_COLOURS[i % len(FLICKR_COLOURS)]
        Image.fromarray(np.full((24, 24, 3), colour, dtype=np.uint8)).save(root / "Images" / f"{i}.jpg")
        rows += [f"{i}.jpg,photo {i} number {k}" for k in range(4)] + [f"{i}.jpg,photo {i} , with a comma"]
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    train, dev = images // 2, images // 2 + images // 4
    for split, names in {"train": range(train), "dev": range(train, dev), "test": range(dev, images)}.items():
        (root / f"Flickr_8k.{split}Images.txt").write_text("".join(f"{i}.jpg\n" for i in names))
    return root
