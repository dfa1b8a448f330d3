"""Approximate nearest neighbours for large search indexes: a faiss HNSW graph
(Malkov & Yashunin 2016, https://arxiv.org/abs/1603.09320) over the index's unit-norm
embeddings, inner product = cosine.

Exact search multiplies the query with every row: about 50 ms for 100k 512-wide rows on one CPU
core, and it grows with the index. The graph answers in well under a millisecond at the cost of
missing some true neighbours; ``benchmarks/ann_recall.py`` measures recall@10 against exact search
(docs/clip.md). faiss is optional (``pip install 'sfumato[ann]'``, the ``faiss-cpu`` package).

The graph is written beside the index as ``INDEX.faiss`` by ``search index --ann``; the index's
metadata records the graph's parameters and the SHA-256 of the embeddings it was built from, so a
graph left over from another version of the index is refused rather than silently used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sfumato
from torch import Tensor

#: HNSW's neighbours per node and its build-time beam width: faiss' usual settings for ~1M vectors.
HNSW_M = 32
EF_CONSTRUCTION = 200
#: The query-time beam width by default (more: better recall, slower queries).
EF_SEARCH = 128


def require_faiss() -> Any:
    """The ``faiss`` module, or a ``SpecError`` naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise sfumato.SpecError("the ann backend needs faiss, which is not installed: pip install 'sfumato[ann]' "
                                "(the faiss-cpu package), or use --backend exact") from None
    return faiss


def graph_path(index_path: str | Path) -> Path:
    """Where the graph of an index file lives: ``photos.index.safetensors`` -> ``photos.index.safetensors.faiss``."""
    index_path = Path(index_path)
    return index_path.with_name(index_path.name + ".faiss")


def embeddings_digest(embeddings: Tensor) -> str:
    """Hex SHA-256 of the float32 bytes of ``embeddings [N, E]``."""
    return hashlib.sha256(np.ascontiguousarray(embeddings.float().cpu().numpy()).tobytes()).hexdigest()


@dataclass
class AnnGraph:
    """A faiss HNSW graph over ``N`` unit-norm rows; ``search`` gives row ids, best first."""

    graph: Any
    ef_search: int = EF_SEARCH

    @classmethod
    def build(cls, embeddings: Tensor, m: int = HNSW_M, ef_construction: int = EF_CONSTRUCTION) -> AnnGraph:
        faiss = require_faiss()
        graph = faiss.IndexHNSWFlat(embeddings.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
        graph.add(np.ascontiguousarray(embeddings.float().cpu().numpy()))
        return cls(graph)

    def record(self, embeddings: Tensor) -> dict[str, Any]:
        """What the index's metadata keeps about this graph: its kind, ``m``, size and the
        digest of the embeddings it holds."""
        return {"kind": "faiss-hnsw", "m": int(self.graph.hnsw.nb_neighbors(1)), "rows": int(self.graph.ntotal),
                "embeddings_sha256": embeddings_digest(embeddings)}

    def search(self, queries: Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [Q, k], row ids [Q, k])`` of the approximately nearest rows of ``queries [Q, E]``
        (unit norm); the beam ``ef_search`` is raised to ``k`` when lower."""
        self.graph.hnsw.efSearch = max(self.ef_search, k)
        scores, ids = self.graph.search(np.ascontiguousarray(queries.float().cpu().numpy()), k)
        return scores, ids

    def save(self, path: str | Path) -> Path:
        faiss = require_faiss()
        sfumato.atomic_write(Path(path), lambda tmp: faiss.write_index(self.graph, str(tmp)))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> AnnGraph:
        faiss = require_faiss()
        return cls(faiss.read_index(str(path)))


def load_graph(index: Any, index_path: str | Path) -> AnnGraph:
    """The graph beside ``index_path``, checked against the loaded ``index`` (a ``SearchIndex``):
    one must have been built (``search index --ann``) from exactly these embeddings."""
    from .search import SearchIndexError

    path = graph_path(index_path)
    rebuild = f"rebuild it with `sfumato search index {index.root or 'DIR'} --out {index_path} --update --ann`"
    if not index.ann or not path.is_file():
        missing = "records no ANN graph" if not index.ann else f"records an ANN graph but {path} is missing"
        raise SearchIndexError(f"{index_path} {missing}; {rebuild}, or query with --backend exact")
    graph = AnnGraph.load(path)
    digest = embeddings_digest(index.embeddings)
    if int(graph.graph.ntotal) != len(index) or index.ann.get("embeddings_sha256") != digest:
        raise SearchIndexError(f"{path} was built from other embeddings than {index_path} now holds (it has "
                               f"{int(graph.graph.ntotal)} rows, the index {len(index)}); {rebuild}")
    return graph
