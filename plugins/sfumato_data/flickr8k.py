"""``flickr8k``: Flickr8k, about 8,000 photos with five captions each.

Two caption formats are read, whichever the folder holds:

- ``captions.txt`` (the Kaggle layout, next to an ``Images/`` folder): CSV with the header
  ``image,caption`` and one row per caption. A caption with a comma should be quoted; one that is
  not (``a.jpg,A dog, running .``) is read whole, since an image name never holds a comma;
- ``Flickr8k.token.txt`` (the original layout, next to ``Flicker8k_Dataset/``): lines
  ``<image>#<n>\\t<caption>`` with n = 0..4.

Splits are by image, never by caption. The official ``Flickr_8k.trainImages.txt`` (6,000),
``Flickr_8k.devImages.txt`` (``val``, 1,000) and ``Flickr_8k.testImages.txt`` (1,000: the "1K test"
protocol of retrieval papers) lists are used when they are in the folder. The Kaggle download
ships no such lists: copy them from the original ``Flickr8k_text`` archive into the folder to get
the official split; otherwise a seeded shuffle of the sorted image names is cut by
``val_fraction`` and ``test_fraction``, which is a split of its own, not comparable with
published 1K-test figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import csv
import io

import sfumato
import torch
from pydantic import Field

from .files import DatasetError, missing_files, missing_files_error, open_image, read_text, require_dir
from .splits import split_items
from .transforms import ImageDatasetSpec, ImageTransform

CAPTION_FILES = ("captions.txt", "Flickr8k.token.txt")
IMAGE_DIRS = ("Images", "Flicker8k_Dataset", "Flickr8k_Dataset", "images")
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}


def read_captions_token(path: Path) -> dict[str, list[str]]:
    """``image -> captions`` from ``Flickr8k.token.txt`` lines ``<image>#<n>\\t<caption>``,
    captions ordered by n."""
    numbered: dict[str, list[tuple[int, str]]] = {}
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not text.strip():
            continue
        key, tab, caption = text.partition("\t")
        image, hash_sign, number = key.rpartition("#")
        if not tab or not hash_sign or not number.isdigit():
            raise DatasetError(f"{path}:{line}: expected '<image>#<n>\\t<caption>', found {text[:80]!r}")
        numbered.setdefault(image.strip(), []).append((int(number), caption.strip()))
    return {image: [c for _, c in sorted(items)] for image, items in numbered.items()}


def read_captions_csv(path: Path) -> dict[str, list[str]]:
    """``image -> captions`` from the Kaggle ``captions.txt`` (header ``image,caption``). Quoted
    captions may hold commas and quotes; an unquoted comma splits the row into more fields, which
    are joined back with the commas the csv reader took out, so the caption is never cut."""
    rows = csv.reader(io.StringIO(read_text(path), newline=""))
    captions: dict[str, list[str]] = {}
    try:
        header = next(rows, [])
        if [h.strip() for h in header[:2]] != ["image", "caption"]:
            raise DatasetError(f"{path}: expected the CSV header 'image,caption', found {header}")
        for row in rows:
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2 or not row[0].strip():
                raise DatasetError(f"{path}:{rows.line_num}: expected 'image,caption', found {row}")
            captions.setdefault(row[0].strip(), []).append(",".join(row[1:]).strip())
    except csv.Error as exc:
        raise DatasetError(f"{path}:{rows.line_num}: not a readable CSV row ({exc})") from exc
    return captions


def read_captions(path: Path) -> dict[str, list[str]]:
    """``image -> captions`` from either format, told apart by the first line (the CSV header)."""
    text = read_text(path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    captions = read_captions_csv(path) if first.startswith("image,") else read_captions_token(path)
    if not captions:
        raise DatasetError(f"{path}: the caption file holds no captions; expected 'image,caption' rows "
                           "or '<image>#<n>\\t<caption>' lines")
    return captions


def find_caption_file(root: Path, name: str | None) -> Path:
    """The caption file named in the spec, or the first of ``CAPTION_FILES`` in ``root``."""
    candidates = [root / name] if name else [root / n for n in CAPTION_FILES]
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetError(
        f"{root}: no caption file; expected {' or '.join(p.name for p in candidates)} in this folder"
    )


def find_image_dir(root: Path, name: str | None) -> Path:
    """The image folder named in the spec, or the first of ``IMAGE_DIRS`` in ``root``."""
    candidates = [root / name] if name else [root / n for n in IMAGE_DIRS]
    for path in candidates:
        if path.is_dir():
            return path
    raise DatasetError(f"{root}: no image folder; expected one of {[p.name for p in candidates]}")


class Flickr8kDataset(sfumato.Dataset):
    """Flickr8k photos with ``caption`` and all five ``captions``.

    ``caption`` is the first caption (``caption_choice = "first"``) or a random one drawn anew at
    every access from torch's global generator (``"random"``), so each epoch sees different
    captions of an image, reproducibly under ``torch.manual_seed``.
    """

    class Spec(ImageDatasetSpec):
        type: Literal["flickr8k"] = "flickr8k"
        root: sfumato.SpecPath = Field(..., description="Folder holding the caption file and the image folder.")
        split: Literal["train", "val", "test", "all"] = Field("train", description="Which images, split by image.")
        captions_file: str | None = Field(
            None, description="Caption file inside root; default: captions.txt, else Flickr8k.token.txt."
        )
        images_dir: str | None = Field(
            None, description="Image folder inside root; default: Images, else Flicker8k_Dataset."
        )
        split_source: Literal["auto", "files", "fractions"] = Field(
            "auto",
            description="'files': the official Flickr_8k.*Images.txt lists; 'fractions': a seeded split; "
            "'auto': the lists when present, else fractions.",
        )
        val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of images in val (fraction splits).")
        test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of images in test (fraction splits).")
        seed: int = Field(0, ge=0, description="Seed of the fraction split.")
        caption_choice: Literal["random", "first"] = Field(
            "random", description="The item's caption: a random one of the image's captions, or the first."
        )
        on_missing: Literal["error", "skip"] = Field(
            "error",
            description="Images named in the caption file but absent from the folder: an error, or skipped. "
            "The original Flickr8k.token.txt names one absent file, 2258277193_586949ec62.jpg.1.",
        )

    def __init__(self, spec: Spec):
        self.spec = spec
        root = require_dir(spec.root, "Flickr8k")
        caption_path = find_caption_file(root, spec.captions_file)
        captions = read_captions(caption_path)
        image_dir = find_image_dir(root, spec.images_dir)
        missing = missing_files(image_dir, captions)
        if missing and spec.on_missing == "error":
            raise missing_files_error(caption_path, image_dir, missing, "add them, or set on_missing = 'skip'")
        names = sorted(set(captions) - set(missing))
        self.names = self._split(root, names, caption_path)
        self.captions = {name: captions[name] for name in self.names}
        self.image_dir = image_dir
        self.transform = ImageTransform.from_spec(spec)

    def _split(self, root: Path, names: list[str], caption_path: Path) -> list[str]:
        spec = self.spec
        if spec.split == "all":
            return names
        listed = root / SPLIT_FILES[spec.split]
        if spec.split_source == "files" or (spec.split_source == "auto" and listed.is_file()):
            if not listed.is_file():
                raise DatasetError(f"{listed}: missing; split_source = 'files' needs the official split lists")
            wanted = {line.strip() for line in listed.read_text(encoding="utf-8-sig").splitlines() if line.strip()}
            return [name for name in names if name in wanted]
        if spec.val_fraction + spec.test_fraction >= 1:
            raise sfumato.SpecError(
                f"[dataset] val_fraction + test_fraction = {spec.val_fraction + spec.test_fraction}: "
                "must be below 1 so the train split keeps images"
            )
        fractions = {"test": spec.test_fraction, "val": spec.val_fraction}
        fractions["train"] = 1 - spec.test_fraction - spec.val_fraction
        return split_items(names, fractions, spec.split, spec.seed)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        captions = self.captions[name]
        choice = 0 if self.spec.caption_choice == "first" else int(torch.randint(len(captions), ()).item())
        return {
            "image": self.transform(open_image(self.image_dir / name)),
            "caption": captions[choice],
            "captions": list(captions),
        }
