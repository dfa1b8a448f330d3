"""Semantic image search: embed a folder of images once, then query it by text or by image.

An index is a safetensors file holding ``embeddings [N, E]`` (unit norm) with the image file
names, relative to the indexed folder, as JSON in its metadata, and the encoder spec that made
it, so a query can check it uses the same embedding space.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from sfumato import Encoder, load_weights, read_metadata, save_weights
from torch import Tensor
from tqdm.auto import tqdm

from .images import image_files, load_image

FILES_KEY = "sfumato.search.files"
ROOT_KEY = "sfumato.search.root"
ENCODER_KEY = "sfumato.search.encoder"


@dataclass
class SearchHit:
    file: str
    score: float


@dataclass
class SearchIndex:
    """Unit-norm image embeddings ``[N, E]`` and the file each row came from."""

    embeddings: Tensor
    files: list[str]
    root: str = ""

    def __len__(self) -> int:
        return len(self.files)

    def query(self, embedding: Tensor, k: int = 5) -> list[SearchHit]:
        """The ``k`` images most similar (cosine) to ``embedding [E]``, best first."""
        scores = self.embeddings @ F.normalize(embedding.to(self.embeddings).flatten(), dim=0)  # (N,)
        top = scores.topk(min(k, len(self)))
        return [SearchHit(self.files[i], s) for s, i in zip(top.values.tolist(), top.indices.tolist())]

    def save(self, path: str | Path, encoder_spec: str = "") -> Path:
        metadata = {FILES_KEY: self.files, ROOT_KEY: self.root, ENCODER_KEY: encoder_spec}
        return save_weights({"embeddings": self.embeddings}, path, metadata)

    @classmethod
    def load(cls, path: str | Path) -> SearchIndex:
        metadata = read_metadata(path)
        if FILES_KEY not in metadata:
            raise ValueError(f"{path} is not a search index (no {FILES_KEY} metadata); build one with "
                             "`sfumato search index DIR --out INDEX`")
        return cls(load_weights(path)["embeddings"], json.loads(metadata[FILES_KEY]), metadata.get(ROOT_KEY, ""))


@torch.no_grad()
def embed_images(image_encoder: Encoder, paths: list[Path], batch_size: int = 32, size: int | None = None,
                 progress: bool = True) -> Tensor:
    """``[N, E]`` unit-norm embeddings of image files, read and encoded in batches."""
    size = size or image_encoder.image_size
    chunks = []
    for start in tqdm(range(0, len(paths), batch_size), desc="embedding images", unit="batch", disable=not progress):
        batch = torch.stack([load_image(p, size) for p in paths[start : start + batch_size]])  # (b, 3, S, S)
        chunks.append(F.normalize(image_encoder.encode(batch).pooled.float().cpu(), dim=-1))
    if not chunks:
        return torch.empty(0, image_encoder.embed_dim)
    return torch.cat(chunks)


def build_index(image_encoder: Encoder, folder: str | Path, batch_size: int = 32, progress: bool = True) -> SearchIndex:
    """Embed every image under ``folder``."""
    paths = image_files(folder)
    if not paths:
        raise FileNotFoundError(f"no images found under {folder}")
    embeddings = embed_images(image_encoder, paths, batch_size, progress=progress)
    return SearchIndex(embeddings, [str(p.relative_to(folder)) for p in paths], str(Path(folder).resolve()))


@torch.no_grad()
def query_text(index: SearchIndex, text_encoder: Encoder, text: str, k: int = 5) -> list[SearchHit]:
    """The images best matching a caption."""
    return index.query(text_encoder.encode([text]).pooled[0], k)


@torch.no_grad()
def query_image(index: SearchIndex, image_encoder: Encoder, path: str | Path, k: int = 5) -> list[SearchHit]:
    """The images most similar to an image file."""
    image = load_image(path, image_encoder.image_size)[None]
    return index.query(image_encoder.encode(image).pooled[0], k)
