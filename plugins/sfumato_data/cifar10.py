"""``cifar10``: CIFAR-10 as distributed by the University of Toronto, in either of its two versions.

- **python version** (``cifar-10-batches-py``): ``data_batch_1`` ... ``data_batch_5`` (train),
  ``test_batch`` and ``batches.meta``. Each batch is a pickled dict with ``b"data"``, a uint8
  array ``[N, 3072]`` whose rows are the red, green and blue 32 x 32 planes in row-major order,
  and ``b"labels"``, N ints in 0..9; the meta dict holds ``b"label_names"``.
- **binary version** (``cifar-10-batches-bin``): ``data_batch_1.bin`` ... ``data_batch_5.bin``,
  ``test_batch.bin`` and ``batches.meta.txt`` (one class name a line). Each record is 3073 bytes:
  the label, then the same 3072 pixel bytes.

Security: unpickling runs code chosen by whoever wrote the file, so the python batches are read
with ``CifarUnpickler``, which admits only what the real files hold (dicts, lists, bytes, str,
ints and numpy arrays) and refuses every other global by name. The binary version needs no
pickle at all and is preferred when a folder holds both.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sfumato
from PIL import Image
from pydantic import Field

from .files import DatasetError, read_text, require_dir, require_file
from .prompts import class_prompt
from .transforms import ImageDatasetSpec, ImageTransform

try:  # numpy 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

PYTHON_FOLDER, BINARY_FOLDER = "cifar-10-batches-py", "cifar-10-batches-bin"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
META_FILE = "batches.meta"
BINARY_SUFFIX, BINARY_META_FILE = ".bin", "batches.meta.txt"
#: One binary record: the label byte, then the red, green and blue 32 x 32 planes.
RECORD_BYTES = 1 + 3072

#: The only globals a CIFAR-10 python batch may name: numpy's array reconstruction, under its
#: numpy 1 and numpy 2 module names (``_frombuffer`` is how numpy pickles arrays at protocol 5,
#: for batches rewritten by Python 3).
ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global that a CIFAR-10 batch never holds."""


class CifarUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR-10 python batches: dicts, lists, bytes, str and ints come from
    pickle's own opcodes, numpy arrays from ``ARRAY_GLOBALS``; any other global (a function or
    class a crafted file would call) is refused before it is looked up, so it never runs."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ARRAY_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"refused to load {module}.{name}: a CIFAR-10 batch holds only dicts, lists, bytes, "
                                "str, ints and numpy arrays, so this file is not one and may have been crafted to "
                                "run code") from None


def _unpickle(path: Path) -> dict:
    """Read one CIFAR-10 python pickle with ``CifarUnpickler``."""
    try:
        with open(path, "rb") as f:
            content = CifarUnpickler(f, encoding="bytes").load()
    except RefusedGlobal as exc:
        raise DatasetError(f"{path}: {exc}; use the official archive's files") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DatasetError(f"{path}: not a CIFAR-10 python pickle ({exc}); use the official archive's files") from exc
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: expected a pickled dict, found {type(content).__name__}")
    return content


def _checked(path: Path, data: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` from rows of 3072 bytes, checked."""
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{path}: b'data' must be uint8 [N, 3072] with N = len(b'labels') = {labels.shape[0]}; "
            f"found {data.dtype} {list(data.shape)}"
        )
    if labels.size and not (0 <= labels.min() and labels.max() <= 9):
        raise DatasetError(f"{path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels  # rows are the R, G, B planes, each row-major


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` from one python batch file, checked."""
    batch = _unpickle(path)
    if b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: a CIFAR-10 batch has keys b'data' and b'labels'; found {sorted(map(repr, batch))}")
    try:
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DatasetError(f"{path}: b'data' must be a uint8 array and b'labels' a list of ints ({exc})") from exc
    if labels.ndim != 1:
        raise DatasetError(f"{path}: b'labels' must be a flat list of ints, found shape {list(labels.shape)}")
    return _checked(path, data, labels)


def read_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` from one binary batch file, checked."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DatasetError(f"{path}: a CIFAR-10 binary batch is whole records of {RECORD_BYTES} bytes (a label byte "
                           f"and 3072 pixel bytes); this file has {raw.size} bytes")
    records = raw.reshape(-1, RECORD_BYTES)
    return _checked(path, records[:, 1:], records[:, 0].astype(np.int64))


def _label_names(path: Path, names: Any) -> list[str]:
    if not isinstance(names, list) or len(names) != 10:
        raise DatasetError(f"{path}: expected the 10 class names; found {names!r:.80}")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def read_label_names(path: Path) -> list[str]:
    """The ten class names of ``batches.meta`` (python) or ``batches.meta.txt`` (binary), decoded."""
    if path.name == BINARY_META_FILE:
        return _label_names(path, [line.strip() for line in read_text(path).splitlines() if line.strip()])
    return _label_names(path, _unpickle(path).get(b"label_names"))


def find_batches(root: Path) -> tuple[Path, Literal["python", "binary"]]:
    """The folder holding the batches and their version: ``root`` itself, or its
    ``cifar-10-batches-bin`` or ``cifar-10-batches-py`` sub-folder; binary first, as it needs no
    unpickling."""
    for folder in (root, root / BINARY_FOLDER, root / PYTHON_FOLDER):
        if (folder / BINARY_META_FILE).is_file():
            return folder, "binary"
        if (folder / META_FILE).is_file():
            return folder, "python"
    raise DatasetError(
        f"{root}: no CIFAR-10 batches; expected {META_FILE} (python version) or {BINARY_META_FILE} (binary "
        f"version) in it or in its {PYTHON_FOLDER}/ or {BINARY_FOLDER}/ sub-folder"
    )


class Cifar10Dataset(sfumato.Dataset):
    """CIFAR-10 images with ``label`` and a ``caption`` from ``caption_template``
    (``"a photo of an airplane"``), from the python or the binary version. The whole split is read
    into memory (150 MB for train)."""

    class Spec(ImageDatasetSpec):
        type: Literal["cifar10"] = "cifar10"
        root: sfumato.SpecPath = Field(..., description="Folder holding the batches (or their cifar-10-batches-py or "
                          "cifar-10-batches-bin folder).")
        split: Literal["train", "test"] = Field("train", description="data_batch_1..5 or test_batch.")
        resolution: int = Field(32, ge=1, description="Side of the square images; 32 is the native size.")
        caption_template: str = Field(
            "a photo of {article} {label}",
            description="Caption of an image; {label} is the class name, {article} 'a' or 'an' to match it.",
        )

    def __init__(self, spec: Spec):
        self.spec = spec
        folder, version = find_batches(require_dir(spec.root, "CIFAR-10"))
        names = TRAIN_BATCHES if spec.split == "train" else TEST_BATCHES
        if version == "binary":
            self.label_names = read_label_names(folder / BINARY_META_FILE)
            paths = [require_file(folder / f"{name}{BINARY_SUFFIX}", f"CIFAR-10 {spec.split} split") for name in names]
            batches = [read_binary_batch(path) for path in paths]
        else:
            self.label_names = read_label_names(folder / META_FILE)
            paths = [require_file(folder / name, f"CIFAR-10 {spec.split} split") for name in names]
            batches = [read_batch(path) for path in paths]
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
