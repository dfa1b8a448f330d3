"""Semantic image search: embed a folder of images once, then query it by text or by image.

An index is a safetensors file holding ``embeddings [N, E]`` (unit norm) with, in its metadata,
the image file names (relative to the indexed folder) as JSON, the encoder specs that made it
(so a query can rebuild them) and the encoders' identity: the embedding width and a SHA-256 of
each tower's weights. A query checks its encoders against that identity, because embeddings of
another model, even of the same width, give scores that mean nothing.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sfumato
import torch
import torch.nn.functional as F
from sfumato import Encoder, load_weights, read_metadata, save_weights
from torch import Tensor, nn
from tqdm.auto import tqdm

from .images import ImageFileError, encode_file_inputs, file_input, image_files

FILES_KEY = "sfumato.search.files"
ROOT_KEY = "sfumato.search.root"
ENCODER_KEY = "sfumato.search.encoder"
IDENTITY_KEY = "sfumato.search.identity"

#: The remedy for an encoder that does not match an index.
USE_RECORDED = "query with the CLIP that built the index (leave out --weights and --spec to use the one it records)"


class SearchIndexError(sfumato.SfumatoError, ValueError):
    """A search index file is missing or malformed, or a query's encoder did not make it."""


def weights_fingerprint(module: nn.Module) -> str:
    """Hex SHA-256 of a module's state dict (names, dtypes, shapes and bytes): the identity of
    its weights, whichever file or folder format they were read from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _describe(encoder: Any) -> dict[str, Any]:
    """The identity of one tower: where its weights came from and their fingerprint."""
    weights = getattr(getattr(encoder, "spec", None), "weights", None)
    return {"weights": str(weights) if weights else "random initialisation", "sha256": weights_fingerprint(encoder)}


def encoder_identity(text_encoder: Encoder, image_encoder: Encoder) -> dict[str, Any]:
    """What an index records about the CLIP that made it: ``embed_dim`` and, per tower
    (``text_encoder``, ``image_encoder``), its ``weights`` source and their ``sha256``."""
    return {"embed_dim": int(image_encoder.embed_dim), "text_encoder": _describe(text_encoder),
            "image_encoder": _describe(image_encoder)}


@dataclass
class SearchHit:
    file: str
    score: float


@dataclass
class SearchIndex:
    """Unit-norm image embeddings ``[N, E]`` and the file each row came from.

    :param encoders: the text and image encoder specs that made it (JSON-ready), if recorded.
    :param identity: ``encoder_identity`` of the CLIP that made it, if recorded.
    :param skipped: ``"file: reason"`` of each image ``build_index`` could not read (not saved).
    :param source: the file it was loaded from (for messages).
    """

    embeddings: Tensor
    files: list[str]
    root: str = ""
    encoders: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    skipped: list[str] = field(default_factory=list)
    source: str = "the index"

    def __len__(self) -> int:
        return len(self.files)

    @property
    def embed_dim(self) -> int:
        return self.embeddings.shape[1]

    def query(self, embedding: Tensor, k: int = 5) -> list[SearchHit]:
        """The ``k`` images most similar (cosine) to ``embedding [E]``, best first."""
        if k < 1:
            raise ValueError(f"k must be 1 or more, got {k}")
        embedding = embedding.flatten()
        if embedding.shape[0] != self.embed_dim:
            raise SearchIndexError(f"{self.source} holds {self.embed_dim}-wide embeddings but the query is "
                                   f"{embedding.shape[0]}-wide: {USE_RECORDED}")
        scores = self.embeddings @ F.normalize(embedding.to(self.embeddings), dim=0)  # (N,)
        top = scores.topk(min(k, len(self)))
        return [SearchHit(self.files[i], s) for s, i in zip(top.values.tolist(), top.indices.tolist())]

    def check_encoder(self, encoder: Encoder, role: str) -> None:
        """Refuse to query with ``encoder`` (``role``: ``"text_encoder"`` or ``"image_encoder"``)
        unless it makes embeddings of the index's width with the recorded weights. Hashes the
        encoder's weights: call it once per encoder, not per query. An index from before
        identities were recorded is checked for width only, with a warning."""
        tower, width, mine = role.replace("_", " "), int(encoder.embed_dim), _describe(encoder)
        recorded = (self.identity or {}).get(role)
        made_by = f" built with the {tower} {recorded['weights']}" if recorded else ""
        if width != self.embed_dim:
            raise SearchIndexError(f"{self.source} holds {self.embed_dim}-wide embeddings{made_by}; the query's {tower} "
                                   f"{mine['weights']} makes {width}-wide ones: {USE_RECORDED}")
        if recorded is None:
            warnings.warn(f"{self.source} does not record the encoders that made it, so it cannot be checked "
                          "against this query's; rebuild it with `sfumato search index` to record them", stacklevel=2)
        elif mine["sha256"] != recorded["sha256"]:
            raise SearchIndexError(
                f"{self.source} holds embeddings{made_by} (weights sha256 {recorded['sha256'][:12]}); the query's "
                f"{tower} {mine['weights']} has other weights (sha256 {mine['sha256'][:12]}), so its scores would "
                f"mean nothing: {USE_RECORDED}"
            )

    def save(self, path: str | Path) -> Path:
        metadata = {FILES_KEY: self.files, ROOT_KEY: self.root, ENCODER_KEY: self.encoders or "",
                    IDENTITY_KEY: self.identity or ""}
        return save_weights({"embeddings": self.embeddings}, path, metadata)

    @classmethod
    def load(cls, path: str | Path) -> SearchIndex:
        """Read an index, checked: a missing, unreadable or malformed file raises
        ``SearchIndexError`` naming it."""
        path = Path(path)
        build = f"build one with `sfumato search index DIR --out {path}`"
        if not path.is_file():
            raise SearchIndexError(f"{path}: the search index {'is a directory' if path.is_dir() else 'does not exist'}; "
                                   f"{build}")
        try:
            metadata = read_metadata(path)
        except Exception as exc:  # safetensors raises several types for a file that is not one
            raise SearchIndexError(f"{path}: not a search index (not a readable safetensors file: {exc}); {build}") \
                from exc
        if FILES_KEY not in metadata:
            raise SearchIndexError(f"{path}: not a search index (no {FILES_KEY} metadata); {build}")
        files = _json_field(path, metadata, FILES_KEY)
        encoders = _json_field(path, metadata, ENCODER_KEY)
        identity = _json_field(path, metadata, IDENTITY_KEY)
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise SearchIndexError(f"{path}: {FILES_KEY} must be a JSON list of file names; {build}")
        embeddings = load_weights(path).get("embeddings")
        if embeddings is None or embeddings.ndim != 2 or embeddings.shape[0] != len(files) \
                or not embeddings.is_floating_point():
            found = "none" if embeddings is None else f"{embeddings.dtype} {list(embeddings.shape)}"
            raise SearchIndexError(f"{path}: expected float embeddings [{len(files)}, E], one row per file; "
                                   f"found {found}; {build}")
        if identity is not None and not _is_identity(identity):
            raise SearchIndexError(f"{path}: the {IDENTITY_KEY} metadata is malformed; {build}")
        if encoders is not None and not isinstance(encoders, dict):
            raise SearchIndexError(f"{path}: the {ENCODER_KEY} metadata is malformed; {build}")
        return cls(embeddings, files, metadata.get(ROOT_KEY, ""), encoders, identity, source=str(path))


def _json_field(path: Path, metadata: dict[str, str], key: str) -> Any:
    """A JSON metadata value of an index (None when absent or empty)."""
    raw = metadata.get(key)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SearchIndexError(f"{path}: the {key} metadata is not JSON ({exc.msg}); rebuild the index") from exc


def _is_identity(identity: Any) -> bool:
    """Whether ``identity`` has the shape ``encoder_identity`` gives."""
    return (isinstance(identity, dict) and isinstance(identity.get("embed_dim"), int)
            and all(isinstance(identity.get(role), dict) and {"weights", "sha256"} <= set(identity[role])
                    for role in ("text_encoder", "image_encoder")))


@torch.no_grad()
def embed_images(image_encoder: Encoder, paths: list[Path], batch_size: int = 32, progress: bool = True,
                 strict: bool = True) -> tuple[Tensor, list[Path], list[str]]:
    """``(embeddings [N, E] unit norm, the N paths embedded, "path: reason" of each skipped)``:
    image files read and encoded in batches. An unreadable file raises ``ImageFileError`` when
    ``strict``, else it is skipped and reported."""
    chunks, kept, skipped = [], [], []
    for start in tqdm(range(0, len(paths), batch_size), desc="embedding images", unit="batch", disable=not progress):
        images = []
        for path in paths[start : start + batch_size]:
            try:
                images.append(file_input(image_encoder, path))
            except ImageFileError as exc:
                if strict:
                    raise
                skipped.append(str(exc))
                continue
            kept.append(path)
        if images:
            batch = torch.stack(images)  # (b, 3, S, S)
            chunks.append(F.normalize(encode_file_inputs(image_encoder, batch).float().cpu(), dim=-1))
    embeddings = torch.cat(chunks) if chunks else torch.empty(0, image_encoder.embed_dim)
    return embeddings, kept, skipped


def index_files(folder: str | Path) -> list[Path]:
    """The image files ``build_index`` embeds; a missing folder, or one without images, raises
    ``ImageFileError`` naming it."""
    paths = image_files(folder)
    if not paths:
        raise ImageFileError(f"{folder}: no images (.png, .jpg, .webp, ...) in the folder or below it")
    return paths


def build_index(image_encoder: Encoder, folder: str | Path, batch_size: int = 32, progress: bool = True,
                strict: bool = False) -> SearchIndex:
    """Embed every image under ``folder``. An image that cannot be read is skipped and listed in
    the index's ``skipped``, or, with ``strict``, raises ``ImageFileError`` naming it; a folder
    with no readable image raises ``ImageFileError``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be 1 or more, got {batch_size}")
    paths = index_files(folder)
    embeddings, kept, skipped = embed_images(image_encoder, paths, batch_size, progress=progress, strict=strict)
    if not kept:
        raise ImageFileError(f"{folder}: none of its {len(paths)} image file(s) could be read; the first: {skipped[0]}")
    return SearchIndex(embeddings, [str(p.relative_to(folder)) for p in kept], str(Path(folder).resolve()),
                       skipped=skipped)


@torch.no_grad()
def query_text(index: SearchIndex, text_encoder: Encoder, text: str, k: int = 5) -> list[SearchHit]:
    """The images best matching a caption."""
    return index.query(text_encoder.encode([text]).pooled[0], k)


@torch.no_grad()
def query_image(index: SearchIndex, image_encoder: Encoder, path: str | Path, k: int = 5) -> list[SearchHit]:
    """The images most similar to an image file."""
    return index.query(encode_file_inputs(image_encoder, file_input(image_encoder, path)[None])[0], k)
