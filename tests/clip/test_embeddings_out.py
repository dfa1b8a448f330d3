"""Embeddings out of sfumato: ``sfumato embed`` (.npy + names, Parquet), ``search index --update``
(only new and changed images encoded, counted) and the approximate-nearest-neighbour backend."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import sfumato
import torch
import torch.nn.functional as F
from PIL import Image
from sfumato.cli import main
from sfumato_clip import CLIPImageEncoder, SearchIndex, build_index
from sfumato_clip.search import encoder_identity


def write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)


def cli(argv) -> int:
    code = main([str(a) for a in argv])
    sfumato.set_registry(None)
    return code


def towers(weights) -> tuple:
    spec = {"weights": str(weights)}
    return (sfumato.build("encoder", {"type": "clip-text", **spec}).eval(),
            sfumato.build("encoder", {"type": "clip-image", **spec}).eval())


@pytest.fixture
def photos(tmp_path) -> Path:
    for i, name in enumerate(["b.png", "a.png", "sub/c.jpg"]):
        write_png(tmp_path / "photos" / name, seed=i)
    (tmp_path / "photos" / "broken.png").write_text("not an image")
    return tmp_path / "photos"


def test_embed_images_writes_the_index_embeddings_with_their_names(tiny_clip_file, photos, tmp_path, capsys):
    assert cli(["embed", "images", photos, "--out", tmp_path / "e.npy", "--weights", tiny_clip_file,
                "--no-progress"]) == 0
    assert "broken.png" in capsys.readouterr().err  # skipped, and said so
    embeddings = np.load(tmp_path / "e.npy")
    names = (tmp_path / "e.names.txt").read_text().splitlines()
    index = build_index(towers(tiny_clip_file)[1], photos, progress=False)
    assert names == index.files == ["a.png", "b.png", "sub/c.jpg"]
    assert embeddings.dtype == np.float32 and np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-6)
    assert embeddings == pytest.approx(index.embeddings.numpy(), abs=1e-6)

    assert cli(["embed", "images", photos, "--out", tmp_path / "raw.npy", "--raw", "--weights", tiny_clip_file,
                "--no-progress"]) == 0
    raw = np.load(tmp_path / "raw.npy")
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1, atol=1e-3)
    assert raw / np.linalg.norm(raw, axis=1, keepdims=True) == pytest.approx(embeddings, abs=1e-6)


def test_embed_texts_to_parquet_with_the_model_identity(tiny_clip_file, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "captions.txt").write_text("a red circle\n\n  a blue square  \na red circle\n")
    assert cli(["embed", "texts", tmp_path / "captions.txt", "--out", tmp_path / "t.parquet", "--weights",
                tiny_clip_file, "--no-progress"]) == 0
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.column("name").to_pylist() == ["a red circle", "a blue square", "a red circle"]
    embeddings = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    text, image = towers(tiny_clip_file)
    with torch.no_grad():
        expected = F.normalize(text.encode(["a red circle", "a blue square", "a red circle"]).pooled, dim=-1)
    assert embeddings == pytest.approx(expected.numpy(), abs=1e-6)
    identity = json.loads(table.schema.metadata[b"sfumato.embed"])
    assert identity == encoder_identity(text, image)


def test_parquet_without_pyarrow_names_the_extra(tiny_clip_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    (tmp_path / "captions.txt").write_text("a cat\n")
    assert cli(["embed", "texts", tmp_path / "captions.txt", "--out", tmp_path / "t.parquet",
                "--weights", tiny_clip_file]) == 2
    assert "sfumato[clip]" in capsys.readouterr().err and not (tmp_path / "t.parquet").exists()


class EncodeCounter:
    """Counts the images ``clip-image`` encodes from files."""

    def __init__(self, monkeypatch):
        self.images = 0
        original = CLIPImageEncoder.encode_pixels

        def counting(encoder, pixels):
            self.images += len(pixels)
            return original(encoder, pixels)

        monkeypatch.setattr(CLIPImageEncoder, "encode_pixels", counting)


def test_an_update_encodes_only_new_and_changed_images(tiny_clip_file, photos, tmp_path, capsys, monkeypatch):
    index_file = tmp_path / "photos.index.safetensors"
    counter = EncodeCounter(monkeypatch)
    assert cli(["search", "index", photos, "--out", index_file, "--weights", tiny_clip_file]) == 0
    assert counter.images == 3
    (photos / "b.png").unlink()  # removed
    write_png(photos / "d.png", seed=7)  # new
    write_png(photos / "a.png", seed=8)  # changed: other pixels, and a later modification time
    stat = (photos / "a.png").stat()
    os.utime(photos / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    counter.images = 0
    capsys.readouterr()
    assert cli(["search", "index", photos, "--out", index_file, "--update"]) == 0  # the model the index records
    assert counter.images == 2  # d.png and a.png; sub/c.jpg is not encoded again
    assert "1 kept, 1 added, 1 re-encoded (changed), 1 removed" in capsys.readouterr().out
    updated = SearchIndex.load(index_file)
    fresh = build_index(towers(tiny_clip_file)[1], photos, progress=False)
    assert updated.files == fresh.files == ["a.png", "d.png", "sub/c.jpg"]
    assert torch.allclose(updated.embeddings, fresh.embeddings, atol=1e-6)

    counter.images = 0
    assert cli(["search", "index", photos, "--out", index_file, "--update", "--weights", tiny_clip_file]) == 0
    assert counter.images == 0  # nothing changed: nothing encoded


def test_the_ann_backend_finds_what_exact_search_finds(tiny_clip_file, photos, tmp_path, capsys):
    pytest.importorskip("faiss")
    index_file = tmp_path / "i.safetensors"
    assert cli(["search", "index", photos, "--out", index_file, "--ann", "--weights", tiny_clip_file]) == 0
    capsys.readouterr()
    answers = {}
    for backend in ("exact", "ann"):
        assert cli(["search", "query", index_file, "a photo", "-k", "3", "--backend", backend]) == 0
        answers[backend] = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert answers["ann"] == answers["exact"] and len(answers["exact"]) == 3

    stale = tmp_path / "old.faiss"
    shutil.copy(f"{index_file}.faiss", stale)
    write_png(photos / "e.png", seed=9)
    assert cli(["search", "index", photos, "--out", index_file, "--update"]) == 0  # keeps the graph up to date
    assert cli(["search", "query", index_file, "a photo", "--backend", "ann"]) == 0
    shutil.copy(stale, f"{index_file}.faiss")
    capsys.readouterr()
    assert cli(["search", "query", index_file, "a photo", "--backend", "ann"]) == 2
    assert "built from other embeddings" in capsys.readouterr().err


def test_the_hnsw_graph_recalls_the_exact_neighbours():
    pytest.importorskip("faiss")
    from sfumato_clip.ann import AnnGraph

    g = torch.Generator().manual_seed(0)
    data = F.normalize(torch.randn(3000, 32, generator=g), dim=-1)
    queries = F.normalize(data[:100] + 0.3 * torch.randn(100, 32, generator=g), dim=-1)
    exact = (queries @ data.T).topk(10).indices
    _, found = AnnGraph.build(data).search(queries, 10)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(exact, found)])
    assert recall > 0.95
