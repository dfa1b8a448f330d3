"""Output images and their locks: what produced an image, written into it so it can be replayed.

A lock holds the resolved spec, the sfumato and plugin versions, the call's arguments (prompt,
seed, steps, ...) and the SHA-256 of every local file or folder that a ``SpecPath`` field of the
spec names (weights, tokenizers, a plugin's vocabulary; see ``sfumato.spec_paths``), keyed by that
field (``denoiser.weights``, ``guidance.1.weights``: the ``--set`` spelling); the tables only
training reads (``TRAINING_TABLES``) are left out. A hashed path that lies in the image's folder
or below is written relative to that folder, so a run folder moved with its images still replays.
PNGs carry the lock as a text chunk named ``sfumato``; JPEG and WebP files as their EXIF
UserComment (ASCII JSON, as Stable Diffusion web UIs store their parameters). ``sfumato.replay``
reads a lock back as the untrusted input it is.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Iterator

from PIL import Image, PngImagePlugin
from pydantic import BaseModel

from ._version import __version__
from .errors import SfumatoError, SpecError
from .spec_paths import Location, field_name, is_local_path, local_spec_paths, set_at
from .weights import atomic_write, file_sha256

if TYPE_CHECKING:
    from .pipeline import Pipeline

PNG_KEY = "sfumato"
#: Output formats by file extension (lower case).
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
#: Tables that only training reads (a dataset's folder of images): a lock records no hashes for
#: them, a replay drops them and ``sfumato convert`` leaves their files where they are.
TRAINING_TABLES = ("train", "dataset")
#: A weights folder holding more files than this is not hashed (a lock may name any folder).
MAX_FOLDER_FILES = 1000
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286
#: The character code that starts an EXIF UserComment written in ASCII.
ASCII_COMMENT = b"ASCII\0\0\0"
#: A JPEG's EXIF segment holds at most 64 KiB (less its headers).
JPEG_EXIF_BYTES = 65_000


def path_fields(spec: dict[str, Any], model: type[BaseModel], registry: Any) -> dict[str, str]:
    """Every local file or folder that spec data names in a ``SpecPath`` field (``model`` is the
    pipeline spec's model), by field (``denoiser.weights``)."""
    return {field_name(location): path for location, path in local_spec_paths(model, spec, registry)}


def recorded_paths(spec: dict[str, Any], fields: Collection[str]) -> dict[str, tuple[Location, str]]:
    """The location and local path at each of ``fields`` (a lock's ``weights`` keys, such as
    ``denoiser.weights``) where ``spec`` holds one: how a lock's files are found again in its spec,
    or in the spec a replay's overrides changed, without the plugins that declared the fields."""

    def values(node: Any, where: Location) -> Iterator[tuple[Location, Any]]:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            yield (*where, key), value
            yield from values(value, (*where, key))

    wanted = set(fields)
    return {field_name(location): (location, value) for location, value in values(spec, ())
            if field_name(location) in wanted and is_local_path(value)}


def path_sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder (a diffusers model): of one ``relative/path sha256`` line
    per file, in sorted order (hidden files and folders, such as ``.cache``, left out)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    files = []
    for root, folders, names in os.walk(path):
        folders[:] = [f for f in folders if not f.startswith(".")]
        files += [Path(root, name) for name in names if not name.startswith(".")]
        if len(files) > MAX_FOLDER_FILES:
            raise SfumatoError(f"{path}: a weights folder of more than {MAX_FOLDER_FILES} files is not a model folder")
    lines = sorted(f"{f.relative_to(path).as_posix()} {file_sha256(f)}\n" for f in files if f.is_file())
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def make_lock(pipe: Pipeline, arguments: dict[str, Any]) -> dict[str, Any]:
    """The lock of one call of ``pipe`` with ``arguments`` (JSON-serialisable values only).

    Relative paths (a ``--set`` value is relative to the working folder) are made absolute;
    each file's hash is computed once per pipeline.
    """
    spec, model = pipe.spec.to_dict(), type(pipe.spec)
    for location, path in local_spec_paths(model, spec, pipe.registry):
        if not Path(path).is_absolute():
            set_at(spec, location, str((Path.cwd() / path).resolve()))
    paths = {field: path for field, path in path_fields(spec, model, pipe.registry).items()
             if field.split(".")[0] not in TRAINING_TABLES}
    hashes = pipe.__dict__.setdefault("_weight_hashes", {})
    for path in paths.values():
        if path not in hashes and Path(path).exists():
            hashes[path] = path_sha256(path)
    return {
        "sfumato": __version__,
        "plugins": {p.name: p.version for p in pipe.registry.plugins() if p.status == "ok"},
        "weights": {field: hashes[path] for field, path in paths.items() if path in hashes},
        "spec": spec,
        "arguments": arguments,
    }


def rebase_paths(spec: dict[str, Any], fields: Collection[str], folder: Path, relative: bool) -> dict[str, Any]:
    """A copy of ``spec`` whose paths at ``fields`` (the hashed ones, a lock's ``weights`` keys)
    are relative to ``folder`` where they lie in it or below (``relative``), or absolute, with
    relative ones resolved against ``folder``."""
    spec = copy.deepcopy(spec)
    folder = folder.resolve()
    for location, path in recorded_paths(spec, fields).values():
        target = Path(path)
        if relative and target.is_absolute() and target.is_relative_to(folder):
            set_at(spec, location, target.relative_to(folder).as_posix())
        elif not relative and not target.is_absolute():
            set_at(spec, location, str((folder / target).resolve()))
    return spec


def output_format(path: str | Path) -> str:
    """The image format an output path's extension asks for (PNG, JPEG or WEBP)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        choices = ", ".join(FORMATS)
        raise SpecError(f"{path}: unknown image extension {suffix or '(none)'!r}; use one of {choices}")
    return FORMATS[suffix]


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse an output path before any work: an unknown extension, a folder, an existing file
    (unless ``overwrite``), or a location that cannot be written."""
    text = str(path)
    if text.endswith(("/", os.sep)):
        raise SpecError(f"{text} names a folder; give a file name in it, such as {Path(text) / 'image.png'}")
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path} is a folder; give a file name in it, such as {path / 'image.png'}")
    output_format(path)
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise SpecError(f"{path} exists and is not a regular file; choose another name")
        if not overwrite:
            raise SpecError(f"{path} exists; pass --overwrite to replace it, or choose another name")
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise SpecError(f"{path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SpecError(f"{path}: cannot write into {folder} (permission denied)")
    return path


def save_image(image: Image.Image, path: str | Path, lock: dict[str, Any] | None = None,
               parameters: str | None = None) -> Path:
    """Write an image (atomically) in the format of its extension, with ``lock`` in it, and in a
    PNG ``parameters``, the AUTOMATIC1111 WebUI's settings text (``sfumato.webui_parameters``),
    in a text chunk of that name beside the lock.

    :raises SfumatoError: when the file cannot be written (a full disk, permissions); no partial
        file is left behind.
    """
    path = Path(path)
    kind = output_format(path)
    options: dict[str, Any] = {}
    if lock is not None:
        lock = {**lock, "spec": rebase_paths(lock["spec"], lock["weights"], path.absolute().parent, relative=True)}
        text = json.dumps(lock, sort_keys=True)  # ASCII: \\u escapes
        if kind == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_text(PNG_KEY, text)
            if parameters is not None:
                info.add_text("parameters", parameters)
            options["pnginfo"] = info
        else:
            exif = Image.Exif()
            exif.get_ifd(EXIF_IFD)[USER_COMMENT] = ASCII_COMMENT + text.encode("ascii")
            options["exif"] = exif.tobytes()
            if kind == "JPEG" and len(options["exif"]) > JPEG_EXIF_BYTES:
                raise SpecError(f"{path}: the lock ({len(text):,} bytes) does not fit a JPEG's 64 KiB EXIF segment; "
                                "write a .png or .webp")
    if kind != "PNG":
        image = image.convert("RGB")
        options["quality"] = 95
    try:
        return atomic_write(path, lambda tmp: image.save(tmp, format=kind, **options))
    except SfumatoError:
        raise  # a full disk: atomic_write's DiskFullError names the file
    except OSError as exc:
        raise SfumatoError(f"{path}: cannot write it: {exc.strerror or exc}; nothing was written") from exc


def read_lock(path: str | Path) -> Any:
    """The lock stored in an image written by sfumato, parsed but not yet checked (see
    ``sfumato.replay``); a clear error when the file is no image or holds no lock."""
    if not Path(path).is_file():
        raise SpecError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            text: Any = image.text.get(PNG_KEY) if hasattr(image, "text") else None
            if text is None and image.format in ("JPEG", "WEBP"):
                comment = image.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
                if isinstance(comment, bytes) and comment.startswith(ASCII_COMMENT):
                    text = comment[len(ASCII_COMMENT):].decode("ascii", errors="replace")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise SpecError(f"{path}: not a readable image ({exc})") from exc
    if text is None:
        raise SpecError(f"{path}: has no sfumato lock (it was not written by sfumato generate)")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SpecError(f"{path}: malformed lock: not JSON ({str(exc)[:80] or type(exc).__name__})") from None


def image_grid(images: list[Image.Image], columns: int | None = None) -> Image.Image:
    """Tile images (all the same size) into one grid image, row by row."""
    columns = columns or min(len(images), 4)
    rows = -(-len(images) // columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height), "white")
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * width, (i // columns) * height))
    return grid
