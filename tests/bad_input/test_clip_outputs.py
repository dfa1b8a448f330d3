"""Bad input to the commands that get CLIP figures and embeddings out: ``embed``, ``eval
clip-benchmark``, ``search index --update`` / ``--ann`` and ``search query --backend ann``. Each
row exits 2 naming the culprit, with no traceback and nothing written."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import sfumato
import torch
from bad_input.harness import Case, check, run_cli
from PIL import Image
from sfumato.cli import main
from sfumato_clip import CLIP, save_clip
from sfumato_clip.config import PRESETS

#: The folder of the shared tiny CLIPs, filled once by the ``assets`` fixture.
ASSETS = Path()


def write_png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)


def setup(images: tuple[str, ...] = (), files: dict[str, str] | None = None, folders: tuple[str, ...] = (),
          index: bool = False) -> Callable[[Path], None]:
    """Links to the tiny CLIPs ``a`` and ``b``, small PNGs, text files, empty folders and, with
    ``index``, ``idx.safetensors``: an index of ``photos/`` built with ``a``."""
    def write(root: Path) -> None:
        for name in ("a.safetensors", "b.safetensors"):
            (root / name).symlink_to(ASSETS / name)
        for i, name in enumerate(images):
            write_png(root / name, seed=i)
        for name, content in (files or {}).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(content)
        for name in folders:
            (root / name).mkdir(parents=True, exist_ok=True)
        if index:
            assert main(["search", "index", "photos", "--out", "idx.safetensors", "--weights", "a.safetensors"]) == 0
            sfumato.set_registry(None)
    return write


A = ("--weights", "a.safetensors")
PHOTOS = setup(images=("photos/a.png",))
CAPTIONS = setup(files={"captions.txt": "a cat\n"})
INDEXED = setup(images=("photos/a.png", "photos/b.png", "elsewhere/c.png"), index=True)
BENCHMARK = ("eval", "clip-benchmark")
BAD_TEMPLATE = '[digits]\nclassnames = ["0", "1"]\ntemplates = ["a digit"]\n'

CASES = [
    # embed: the source, the output and its format
    Case("embed-images-missing-folder", ["embed", "images", "nowhere", "--out", "e.npy", *A], ["nowhere", "does not exist"],
         setup()),
    Case("embed-images-empty-folder", ["embed", "images", "empty", "--out", "e.npy", *A], ["empty", "no images"],
         setup(folders=("empty",))),
    Case("embed-images-only-unreadable", ["embed", "images", "photos", "--out", "e.npy", *A],
         ["photos", "none of its 1 image"], setup(files={"photos/x.png": "text"})),
    Case("embed-images-strict-unreadable", ["embed", "images", "photos", "--out", "e.npy", "--strict", *A],
         ["photos/x.png"], setup(images=("photos/a.png",), files={"photos/x.png": "text"})),
    Case("embed-texts-missing-file", ["embed", "texts", "gone.txt", "--out", "e.npy", *A], ["gone.txt", "does not exist"],
         setup()),
    Case("embed-texts-blank-file", ["embed", "texts", "blank.txt", "--out", "e.npy", *A], ["blank.txt", "no captions"],
         setup(files={"blank.txt": "\n  \n"})),
    Case("embed-texts-a-folder", ["embed", "texts", "photos", "--out", "e.npy", *A], ["photos", "directory"], PHOTOS),
    Case("embed-out-unknown-suffix", ["embed", "texts", "captions.txt", "--out", "e.csv", *A],
         ["--out", "e.csv", ".npy", ".parquet"], CAPTIONS),
    Case("embed-unknown-format", ["embed", "texts", "captions.txt", "--out", "e.npy", "--format", "hdf5", *A],
         ["--format", "npy"], CAPTIONS),
    Case("embed-out-exists", ["embed", "texts", "captions.txt", "--out", "e.npy", *A], ["e.npy", "--overwrite"],
         setup(files={"captions.txt": "a cat\n", "e.npy": "the user's file"})),
    Case("embed-names-file-exists", ["embed", "texts", "captions.txt", "--out", "e.npy", *A],
         ["e.names.txt", "--overwrite"], setup(files={"captions.txt": "a cat\n", "e.names.txt": "the user's file"})),
    Case("embed-out-is-a-directory", ["embed", "images", "photos", "--out", "photos", "--format", "npy", *A],
         ["--out", "directory"], PHOTOS),
    Case("embed-batch-size-zero", ["embed", "texts", "captions.txt", "--out", "e.npy", "--batch-size", "0", *A],
         ["--batch-size", "1 or more"], CAPTIONS),
    Case("embed-no-model", ["embed", "texts", "captions.txt", "--out", "e.npy"], ["--weights"], CAPTIONS),
    Case("embed-missing-weights", ["embed", "texts", "captions.txt", "--out", "e.npy", "--weights", "nowhere.sft"],
         ["nowhere.sft"], CAPTIONS),
    # eval clip-benchmark: the datasets, the tasks, the prompts and the outputs
    Case("benchmark-unknown-dataset", [*BENCHMARK, "--dataset", "cifar100", *A], ["cifar100", "cifar10"], setup()),
    Case("benchmark-dataset-without-type", [*BENCHMARK, "--dataset", ":root=x", *A], ["--dataset", "TYPE"], setup()),
    Case("benchmark-dataset-field-without-value", [*BENCHMARK, "--dataset", "digits:split", *A],
         ["--dataset", "split", "KEY=VALUE"], setup()),
    Case("benchmark-dataset-root-missing", [*BENCHMARK, "--dataset", "cifar10:root=nowhere", *A], ["root", "nowhere"],
         setup()),
    Case("benchmark-dataset-unknown-field", [*BENCHMARK, "--dataset", "digits:colour=red", "--task", "zero-shot", *A],
         ["colour"], setup()),
    Case("benchmark-unknown-task", [*BENCHMARK, "--dataset", "digits", "--task", "captioning", *A],
         ["--task", "zero-shot"], setup()),
    Case("benchmark-shots-zero", [*BENCHMARK, "--dataset", "digits", "--shots", "0", *A], ["--shots", "1 or more"],
         setup()),
    Case("benchmark-prompts-missing-file", [*BENCHMARK, "--dataset", "digits", "--prompts", "p.toml", *A],
         ["--prompts", "p.toml"], setup()),
    Case("benchmark-prompts-not-toml", [*BENCHMARK, "--dataset", "digits", "--prompts", "p.toml", *A],
         ["p.toml", "TOML"], setup(files={"p.toml": "[digits\n"})),
    Case("benchmark-prompts-template-without-slot", [*BENCHMARK, "--dataset", "digits", "--prompts", "p.toml", *A],
         ["p.toml", "[digits]", "a digit", "{}"], setup(files={"p.toml": BAD_TEMPLATE})),
    Case("benchmark-prompts-without-classnames", [*BENCHMARK, "--dataset", "digits", "--prompts", "p.toml", *A],
         ["p.toml", "[digits]", "classnames"], setup(files={"p.toml": '[digits]\ntemplates = ["a {}"]\n'})),
    Case("benchmark-prompts-too-few-classnames", [*BENCHMARK, "--dataset", "digits", "--task", "zero-shot", "--limit",
                                                  "40", "--prompts", "p.toml", *A], ["digits", "2 classes", "label"],
         setup(files={"p.toml": '[digits]\nclassnames = ["0", "1"]\ntemplates = ["a {}"]\n'})),
    Case("benchmark-out-is-a-directory", [*BENCHMARK, "--dataset", "digits", "--out", "photos", *A],
         ["--out", "directory"], PHOTOS),
    Case("benchmark-table-is-a-directory", [*BENCHMARK, "--dataset", "digits", "--table", "photos", *A],
         ["--table", "directory"], PHOTOS),
    Case("benchmark-no-dataset", [*BENCHMARK, *A], ["--dataset"], setup()),
    Case("benchmark-no-model", [*BENCHMARK, "--dataset", "digits", "--task", "zero-shot", "--limit", "20"],
         ["--weights"], setup()),
    # search index --update / --ann and search query --backend ann
    Case("update-with-another-model", ["search", "index", "photos", "--out", "idx.safetensors", "--update",
                                       "--weights", "b.safetensors"],
         ["other weights", "a.safetensors", "b.safetensors", "update it with the CLIP that built it"],
         INDEXED),
    Case("update-another-folder", ["search", "index", "elsewhere", "--out", "idx.safetensors", "--update"],
         ["idx.safetensors", "photos", "elsewhere"], INDEXED),
    Case("update-and-overwrite", ["search", "index", "photos", "--out", "idx.safetensors", "--update", "--overwrite"],
         ["--update", "--overwrite"], INDEXED),
    Case("update-not-an-index", ["search", "index", "photos", "--out", "a.safetensors", "--update"],
         ["a.safetensors", "not a search index"], PHOTOS),
    Case("query-ann-without-graph", ["search", "query", "idx.safetensors", "a cat", "--backend", "ann"],
         ["idx.safetensors", "no ANN graph", "--ann"], INDEXED),
    Case("query-unknown-backend", ["search", "query", "idx.safetensors", "a cat", "--backend", "lsh"],
         ["--backend", "exact", "ann"], INDEXED),
    Case("query-ef-search-zero", ["search", "query", "idx.safetensors", "a cat", "--backend", "ann", "--ef-search", "0"],
         ["--ef-search", "1 or more"], INDEXED),
]


@pytest.fixture(scope="module", autouse=True)
def assets(tmp_path_factory):
    """Two tiny random CLIPs, ``a`` and ``b``, of the same width and different weights."""
    global ASSETS
    ASSETS = tmp_path_factory.mktemp("clip-output-assets")
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        save_clip(CLIP(PRESETS["tiny"]), ASSETS / f"{name}.safetensors")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    check(case, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize(("argv", "extra"), [
    (["search", "index", "photos", "--out", "i.safetensors", "--ann", *A], "sfumato[ann]"),
    (["embed", "images", "photos", "--out", "e.parquet", *A], "sfumato[clip]"),
])
def test_a_missing_optional_dependency_names_its_extra(argv, extra, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # importing them now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    check(Case("missing-extra", argv, [extra], PHOTOS), tmp_path, capsys, monkeypatch)
