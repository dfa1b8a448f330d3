"""Reading dataset files: the dataset error, root checks and image decoding that names the file."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import sfumato
from PIL import Image, UnidentifiedImageError

#: File extensions read as images by the folder-based loaders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DatasetError(sfumato.SfumatoError, ValueError):
    """A dataset's files are unusable: a corrupt image, an empty or malformed caption file, or a
    caption file that references images that do not exist. The message names the file."""


def require_dir(root: str | Path, dataset: str, field: str = "root") -> Path:
    """``root`` as a Path, or a ``SpecError`` naming the dataset type, the field and the path."""
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "the directory does not exist" if not path.exists() else "a file, not a directory"
        raise sfumato.SpecError(
            f"[dataset] {field} = {str(root)!r}: {what}; point {field} at the folder that holds the {dataset} files"
        )
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` when it is a file, else a ``DatasetError`` saying which file ``what`` needs."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing; the {what} needs this file")
    return path


def open_image(path: str | Path) -> Image.Image:
    """Decode an image file fully into RGB; a corrupt or unreadable file raises ``DatasetError``
    naming it (PIL opens lazily, so decoding here makes the error point at the right file)."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode the image ({exc}); replace or remove the file") from exc


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def read_text(path: Path) -> str:
    """A caption file's text (a byte-order mark is ignored); not UTF-8 raises ``DatasetError``."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc


#: Where ``csv.DictReader`` puts the fields of a row beyond the header's columns.
_EXTRA_FIELDS = "\0extra"


def read_caption_csv(path: Path, headers: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
    """``image name -> captions`` from a CSV with one row per caption; ``headers`` lists the
    accepted ``(image column, caption column)`` pairs, the first one present is used. Captions
    may hold commas and quotes (the csv module handles both); a byte-order mark is ignored.

    A caption with an unquoted comma (``a.png,a dog, running``, as in Flickr8k's ``captions.txt``)
    splits its row into more fields than the header has. When the caption is the last column the
    extra fields are joined back with the commas the reader took out, so the caption is never cut;
    when it is not, the row is ambiguous and is an error naming the line."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), restkey=_EXTRA_FIELDS)
    try:
        header = list(reader.fieldnames or ())
        columns = next((pair for pair in headers if set(pair) <= set(header)), None)
        if columns is None:
            expected = " or ".join(f"'{a},{b}'" for a, b in headers)
            raise DatasetError(f"{path}: expected the CSV header {expected}, found {reader.fieldnames}")
        caption_last = header[-1] == columns[1]
        captions: dict[str, list[str]] = {}
        for row in reader:
            line = reader.line_num
            name, caption = row[columns[0]], row[columns[1]]
            if not name or caption is None:
                raise DatasetError(f"{path}:{line}: expected '{columns[0]},{columns[1]}', found {row}")
            extra = row.get(_EXTRA_FIELDS)
            if extra:
                if not caption_last:
                    raise DatasetError(
                        f"{path}:{line}: {len(header) + len(extra)} fields for the {len(header)} columns of the header "
                        f"{','.join(header)}; quote a caption that holds a comma (\"a dog, running\")"
                    )
                caption = ",".join([caption, *extra])
            captions.setdefault(name.strip(), []).append(caption.strip())
    except csv.Error as exc:
        raise DatasetError(f"{path}:{reader.line_num}: not a readable CSV row ({exc})") from exc
    return captions


def missing_files(folder: Path, names) -> list[str]:
    """The ``names`` (from a caption file) that are not files in ``folder``, sorted."""
    return sorted(name for name in names if not (folder / name).is_file())


def missing_files_error(caption_path: Path, folder: Path, missing: list[str], remedy: str = "") -> DatasetError:
    """The error for images a caption file names but ``folder`` lacks (the first five named)."""
    listed = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
    return DatasetError(
        f"{caption_path}: {len(missing)} image(s) it names are not in {folder}: {listed}"
        + (f"; {remedy}" if remedy else "; add them or remove their rows")
    )
