"""Semantic image search: embed a folder of images once, then query it by text or by image.

An index is a safetensors file holding ``embeddings [N, E]`` (unit norm) with, in its metadata,
the image file names (relative to the indexed folder) as JSON, the encoder specs that made it
(so a query can rebuild them) and the encoders' identity: the embedding width and a SHA-256 of
each tower's weights. A query checks its encoders against that identity, because embeddings of
another model, even of the same width, give scores that mean nothing.

Each file's size and modification time are recorded too, so ``update_index`` re-encodes only the
images that are new or changed and drops the rows of removed ones. An approximate-nearest-neighbour
graph for large indexes lives beside the index (``ann``).
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
STAMPS_KEY = "sfumato.search.stamps"
ANN_KEY = "sfumato.search.ann"

#: The remedy for an encoder that does not match an index.
USE_RECORDED = "query with the CLIP that built the index (leave out --weights and --spec to use the one it records)"
#: The remedy for an update (``search index --update``) whose encoder does not match the index.
UPDATE_WITH_RECORDED = ("update it with the CLIP that built it (leave out --weights and --spec to use the one it "
                        "records), or build a new index with --overwrite")


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
    :param stamps: ``[size, mtime_ns]`` of each file when it was embedded (``file_stamp``), if recorded.
    :param ann: what the ANN graph beside the index records (``ann.AnnGraph.record``), if one was built.
    """

    embeddings: Tensor
    files: list[str]
    root: str = ""
    encoders: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    skipped: list[str] = field(default_factory=list)
    source: str = "the index"
    stamps: list[list[int]] | None = None
    ann: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def embed_dim(self) -> int:
        return self.embeddings.shape[1]

    def query(self, embedding: Tensor, k: int = 5, graph: Any = None) -> list[SearchHit]:
        """The ``k`` images most similar (cosine) to ``embedding [E]``, best first: exactly, or
        approximately through ``graph`` (an ``ann.AnnGraph`` of this index)."""
        if k < 1:
            raise ValueError(f"k must be 1 or more, got {k}")
        embedding = embedding.flatten()
        if embedding.shape[0] != self.embed_dim:
            raise SearchIndexError(f"{self.source} holds {self.embed_dim}-wide embeddings but the query is "
                                   f"{embedding.shape[0]}-wide: {USE_RECORDED}")
        query = F.normalize(embedding.to(self.embeddings), dim=0)
        if graph is not None:
            scores, ids = graph.search(query[None], min(k, len(self)))
            return [SearchHit(self.files[i], float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        top = (self.embeddings @ query).topk(min(k, len(self)))  # over (N,) scores
        return [SearchHit(self.files[i], s) for s, i in zip(top.values.tolist(), top.indices.tolist())]

    def check_encoder(self, encoder: Encoder, role: str, purpose: str = "query") -> None:
        """Refuse to query (``purpose``: ``"query"``, or ``"update"`` for ``update_index``) with
        ``encoder`` (``role``: ``"text_encoder"`` or ``"image_encoder"``) unless it makes
        embeddings of the index's width with the recorded weights. Hashes the
        encoder's weights: call it once per encoder, not per query. An index from before
        identities were recorded is checked for width only, with a warning."""
        tower, width, mine = role.replace("_", " "), int(encoder.embed_dim), _describe(encoder)
        remedy = USE_RECORDED if purpose == "query" else UPDATE_WITH_RECORDED
        harm = ("its scores would mean nothing" if purpose == "query"
                else "its rows would not be comparable with the rest")
        recorded = (self.identity or {}).get(role)
        made_by = f" built with the {tower} {recorded['weights']}" if recorded else ""
        if width != self.embed_dim:
            raise SearchIndexError(f"{self.source} holds {self.embed_dim}-wide embeddings{made_by}; the {purpose}'s "
                                   f"{tower} {mine['weights']} makes {width}-wide ones: {remedy}")
        if recorded is None:
            warnings.warn(f"{self.source} does not record the encoders that made it, so it cannot be checked "
                          "against this query's; rebuild it with `sfumato search index` to record them", stacklevel=2)
        elif mine["sha256"] != recorded["sha256"]:
            raise SearchIndexError(
                f"{self.source} holds embeddings{made_by} (weights sha256 {recorded['sha256'][:12]}); the {purpose}'s "
                f"{tower} {mine['weights']} has other weights (sha256 {mine['sha256'][:12]}), so {harm}: "
                f"{remedy}"
            )

    def save(self, path: str | Path) -> Path:
        metadata = {FILES_KEY: self.files, ROOT_KEY: self.root, ENCODER_KEY: self.encoders or "",
                    IDENTITY_KEY: self.identity or "", STAMPS_KEY: self.stamps or "", ANN_KEY: self.ann or ""}
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
        stamps, ann = _json_field(path, metadata, STAMPS_KEY), _json_field(path, metadata, ANN_KEY)
        if stamps is not None and not (isinstance(stamps, list) and len(stamps) == len(files)):
            raise SearchIndexError(f"{path}: the {STAMPS_KEY} metadata must list one [size, mtime] per file; {build}")
        return cls(embeddings, files, metadata.get(ROOT_KEY, ""), encoders, identity, source=str(path),
                   stamps=stamps, ann=ann if isinstance(ann, dict) else None)


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
                 strict: bool = True, normalize: bool = True) -> tuple[Tensor, list[Path], list[str]]:
    """``(embeddings [N, E] (unit norm unless not normalize), the N paths embedded, "path: reason"
    of each skipped)``: image files read and encoded in batches. An unreadable file raises
    ``ImageFileError`` when ``strict``, else it is skipped and reported."""
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
            embeds = encode_file_inputs(image_encoder, batch).float().cpu()  # (b, E)
            chunks.append(F.normalize(embeds, dim=-1) if normalize else embeds)
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
                       skipped=skipped, stamps=[file_stamp(p) for p in kept])


def file_stamp(path: Path) -> list[int]:
    """``[size, mtime_ns]`` of a file: what ``update_index`` compares to tell a changed file."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


@dataclass
class IndexUpdate:
    """What ``update_index`` did: file names kept as they were, added, re-encoded (changed since
    they were embedded) and removed (no longer in the folder)."""

    kept: list[str]
    added: list[str]
    changed: list[str]
    removed: list[str]


def update_index(index: SearchIndex, image_encoder: Encoder, folder: str | Path, batch_size: int = 32,
                 progress: bool = True, strict: bool = False) -> tuple[SearchIndex, IndexUpdate]:
    """``index`` brought up to date with ``folder``: rows of removed files dropped, new and changed
    files (another size or modification time; every file, when the index records no stamps)
    embedded, the rest kept without encoding them again. The caller checks ``image_encoder``
    against the index (``check_encoder``) first. The rows keep the folder's sorted file order."""
    root = Path(folder).resolve()
    if index.root and Path(index.root) != root:
        raise SearchIndexError(f"{index.source} indexes {index.root}, not {root}; update it with that folder, or "
                               "write a new index with another --out")
    paths = index_files(folder)
    recorded = dict(zip(index.files, range(len(index)))) if index.stamps is not None else {}
    names = {path: str(path.relative_to(folder)) for path in paths}
    same = {path for path in paths if names[path] in recorded
            and index.stamps[recorded[names[path]]] == file_stamp(path)}
    fresh = [path for path in paths if path not in same]
    embeddings, embedded, skipped = embed_images(image_encoder, fresh, batch_size, progress=progress, strict=strict)
    rows = {names[path]: embeddings[i] for i, path in enumerate(embedded)}
    rows.update({names[path]: index.embeddings[recorded[names[path]]] for path in same})
    order = [path for path in paths if names[path] in rows]
    if not order:
        raise ImageFileError(f"{folder}: none of its {len(paths)} image file(s) could be read; the first: {skipped[0]}")
    updated = SearchIndex(torch.stack([rows[names[p]] for p in order]).to(index.embeddings.dtype),
                          [names[p] for p in order], str(root), index.encoders, index.identity, skipped,
                          index.source, [file_stamp(p) for p in order])
    current = set(names.values())
    report = IndexUpdate(kept=sorted(names[p] for p in same),
                         added=sorted(names[p] for p in embedded if names[p] not in index.files),
                         changed=sorted(names[p] for p in embedded if names[p] in index.files),
                         removed=sorted(f for f in index.files if f not in current))
    return updated, report


@torch.no_grad()
def query_text(index: SearchIndex, text_encoder: Encoder, text: str, k: int = 5, graph: Any = None) -> list[SearchHit]:
    """The images best matching a caption (approximately through ``graph``, when given)."""
    return index.query(text_encoder.encode([text]).pooled[0], k, graph)


@torch.no_grad()
def query_image(index: SearchIndex, image_encoder: Encoder, path: str | Path, k: int = 5,
                graph: Any = None) -> list[SearchHit]:
    """The images most similar to an image file (approximately through ``graph``, when given)."""
    return index.query(encode_file_inputs(image_encoder, file_input(image_encoder, path)[None])[0], k, graph)
