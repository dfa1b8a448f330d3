"""``cifar10``: the CIFAR-10 "python version" batches, as distributed by the University of Toronto.

The folder (or its ``cifar-10-batches-py`` sub-folder) holds ``data_batch_1`` ... ``data_batch_5``
(train), ``test_batch`` and ``batches.meta``. Each batch is a pickled dict with ``b"data"``, a
uint8 array ``[N, 3072]`` whose rows are the red, green and blue 32 x 32 planes in row-major
order, and ``b"labels"``, N ints in 0..9; the meta dict holds ``b"label_names"``.

Security: unpickling runs code chosen by whoever wrote the file. These files are read with
``pickle.load(f, encoding="bytes")`` because that is the dataset's real format; use only files
from a source you trust (the official archive, checked against its published MD5).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sfumato
from PIL import Image
from pydantic import Field

from .files import DatasetError, require_dir, require_file
from .prompts import class_prompt
from .transforms import ImageDatasetSpec, ImageTransform

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
META_FILE = "batches.meta"


def _unpickle(path: Path) -> dict:
    """Read one CIFAR pickle (trusted files only: see the module docstring)."""
    try:
        with open(path, "rb") as f:
            content = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: not a CIFAR-10 python pickle ({exc})") from exc
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: expected a pickled dict, found {type(content).__name__}")
    return content


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` from one batch file, checked."""
    batch = _unpickle(path)
    if b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: a CIFAR-10 batch has keys b'data' and b'labels'; found {sorted(batch)}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{path}: b'data' must be uint8 [N, 3072] with N = len(b'labels') = {labels.shape[0]}; "
            f"found {data.dtype} {list(data.shape)}"
        )
    if labels.size and not (0 <= labels.min() and labels.max() <= 9):
        raise DatasetError(f"{path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels  # rows are the R, G, B planes, each row-major


def read_label_names(path: Path) -> list[str]:
    """The ten class names of ``batches.meta``, decoded."""
    meta = _unpickle(path)
    names = meta.get(b"label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DatasetError(f"{path}: expected b'label_names', a list of 10 names; found {names!r:.80}")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


class Cifar10Dataset(sfumato.Dataset):
    """CIFAR-10 images with ``label`` and a ``caption`` from ``caption_template``
    (``"a photo of an airplane"``). The whole split is read into memory (150 MB for train)."""

    class Spec(ImageDatasetSpec):
        type: Literal["cifar10"] = "cifar10"
        root: str = Field(..., description="Folder holding the batches (or their cifar-10-batches-py folder).")
        split: Literal["train", "test"] = Field("train", description="data_batch_1..5 or test_batch.")
        resolution: int = Field(32, ge=1, description="Side of the square images; 32 is the native size.")
        caption_template: str = Field(
            "a photo of {article} {label}",
            description="Caption of an image; {label} is the class name, {article} 'a' or 'an' to match it.",
        )

    def __init__(self, spec: Spec):
        self.spec = spec
        root = require_dir(spec.root, "CIFAR-10")
        if (root / "cifar-10-batches-py").is_dir():
            root = root / "cifar-10-batches-py"
        self.label_names = read_label_names(require_file(root / META_FILE, "CIFAR-10 dataset"))
        names = TRAIN_BATCHES if spec.split == "train" else TEST_BATCHES
        batches = [read_batch(require_file(root / name, f"CIFAR-10 {spec.split} split")) for name in names]
        self.images = np.concatenate([images for images, _ in batches])  # (N, 3, 32, 32) uint8
        self.labels = np.concatenate([labels for _, labels in batches])
        self.prompts = [class_prompt(spec.caption_template, name) for name in self.label_names]
        self.transform = ImageTransform.from_spec(spec)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        label = int(self.labels[index])
        pixels = np.ascontiguousarray(self.images[index].transpose(1, 2, 0))  # (32, 32, 3)
        return {
            "image": self.transform(Image.fromarray(pixels, "RGB")),
            "label": label,
            "caption": self.prompts[label],
        }
