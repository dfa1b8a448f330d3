"""``imagefolder``: your own images, with captions or classes, in one of three layouts (the first
found wins):

1. ``metadata.jsonl`` (Hugging Face ``imagefolder``): one JSON object per line with
   ``"file_name"`` (relative to the folder) and a caption column (``"text"`` by default; a list of
   strings gives several captions);
2. ``captions.csv``: a CSV with the header ``file_name,text`` (``image,caption`` is accepted too),
   one row per caption;
3. class sub-folders ``root/<class>/<image>``: ``label`` is the index of the class in the sorted
   folder names and the caption comes from ``caption_template`` (``"a photo of a cat"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import sfumato
from pydantic import Field

from .files import (
    DatasetError,
    image_files,
    missing_files,
    missing_files_error,
    open_image,
    read_caption_csv,
    read_text,
    require_dir,
)
from .prompts import class_prompt
from .splits import split_items
from .transforms import ImageDatasetSpec, ImageTransform

_CSV_COLUMNS = (("file_name", "text"), ("image", "caption"))


def read_metadata_jsonl(path: Path, column: str) -> dict[str, list[str]]:
    """``file_name -> captions`` from Hugging Face style ``metadata.jsonl``."""
    captions: dict[str, list[str]] = {}
    for line, text in enumerate(read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{line}: not a JSON object ({exc.msg})") from exc
        if not isinstance(row, dict) or "file_name" not in row or column not in row:
            raise DatasetError(f"{path}:{line}: expected an object with 'file_name' and {column!r}, found {text[:80]!r}")
        value = row[column]
        texts = value if isinstance(value, list) else [value]
        captions.setdefault(str(row["file_name"]), []).extend(str(t) for t in texts)
    return captions


class ImageFolderDataset(sfumato.Dataset):
    """Images from a folder with ``caption`` (the first of the image's captions) and ``captions``,
    or, for class sub-folders, ``label`` and ``caption``."""

    class Spec(ImageDatasetSpec):
        type: Literal["imagefolder"] = "imagefolder"
        root: sfumato.SpecPath = Field(..., description="The folder: metadata.jsonl, captions.csv or one sub-folder per class.")
        caption_column: str = Field("text", description="The caption key of metadata.jsonl rows.")
        caption_template: str = Field(
            "a photo of {article} {label}",
            description="Caption of class sub-folder images; {label} is the folder name, {article} 'a' or 'an'.",
        )
        split: Literal["all", "train", "val"] = Field("all", description="All images, or a seeded part of them.")
        val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of the images in val.")
        seed: int = Field(0, ge=0, description="Seed of the train/val split.")

    def __init__(self, spec: Spec):
        self.spec = spec
        root = require_dir(spec.root, "image folder")
        self.class_names: list[str] = []
        if (root / "metadata.jsonl").is_file():
            items = self._captioned(root / "metadata.jsonl", read_metadata_jsonl(root / "metadata.jsonl", spec.caption_column))
        elif (root / "captions.csv").is_file():
            items = self._captioned(root / "captions.csv", read_caption_csv(root / "captions.csv", _CSV_COLUMNS))
        else:
            items = self._classes(root)
        if spec.split != "all":
            fractions = {"val": spec.val_fraction, "train": 1 - spec.val_fraction}
            items = split_items(items, fractions, spec.split, spec.seed, source=str(root))
        self.items = items
        self.transform = ImageTransform.from_spec(spec)

    @staticmethod
    def _captioned(path: Path, captions: dict[str, list[str]]) -> list[tuple[Path, list[str], int | None]]:
        if not captions:
            raise DatasetError(f"{path}: the caption file holds no rows")
        missing = missing_files(path.parent, captions)
        if missing:
            raise missing_files_error(path, path.parent, missing)
        return [(path.parent / name, texts, None) for name, texts in sorted(captions.items())]

    def _classes(self, root: Path) -> list[tuple[Path, list[str], int | None]]:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.class_names = [folder.name for folder in folders]
        items = [
            (path, [class_prompt(self.spec.caption_template, folder.name)], label)
            for label, folder in enumerate(folders)
            for path in image_files(folder)
        ]
        if not items:
            loose = len(image_files(root))
            found = (f"{loose} image(s) but no metadata.jsonl or captions.csv to caption them and no class "
                     "sub-folders" if loose else "no images")
            raise DatasetError(f"{root}: {found}; expected metadata.jsonl, captions.csv or class sub-folders of images")
        return items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, captions, label = self.items[index]
        item = {"image": self.transform(open_image(path)), "caption": captions[0], "captions": list(captions)}
        if label is not None:
            item["label"] = label
        return item
