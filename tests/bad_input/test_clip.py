"""Bad input to the CLIP commands: ``classify``, ``search index``, ``search query``, ``tokenizer``,
``eval zero-shot`` and ``eval retrieval``. Each row exits 2 naming the culprit, with no traceback
and nothing written; the ordinary tests below cover what a table row cannot (a run that succeeds
while skipping a bad image, an image folder evaluated without a split)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import sfumato
import torch
from bad_input.harness import Case, check, run_cli
from PIL import Image
from safetensors.torch import save_file
from sfumato.cli import main
from sfumato_clip import CLIP, CLIPConfig, SearchIndex, TextConfig, VisionConfig, save_clip
from sfumato_clip.search import FILES_KEY, IDENTITY_KEY

#: The folder of shared files (tiny CLIPs, an index), filled once by the ``assets`` fixture.
ASSETS = Path()

SHAPES_JSON = json.dumps({"type": "shapes", "length": 10, "resolution": 8})


def tiny_clip(embed_dim: int) -> CLIP:
    return CLIP(CLIPConfig(embed_dim=embed_dim, text=TextConfig(width=32, layers=1, heads=4, mlp_width=64),
                           vision=VisionConfig(image_size=32, patch_size=8, width=32, layers=1, heads=4, mlp_width=64)))


def siglip_clip() -> CLIP:
    """A tiny CLIP with a learnable logit bias, which transformers' CLIPModel cannot hold."""
    model = tiny_clip(32)
    config = model.config.model_copy(update={"logit_bias_init": -10.0})
    return CLIP(config)


def write_png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)


def setup(links: tuple[str, ...] = ("a.safetensors",), images: tuple[str, ...] = (),
          files: dict[str, str | bytes] | None = None, folders: tuple[str, ...] = (),
          extra: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """A scratch folder holding links to shared assets, small PNGs, files with given content
    and empty folders."""
    def write(root: Path) -> None:
        for name in links:
            (root / name).symlink_to(ASSETS / name)
        for i, name in enumerate(images):
            write_png(root / name, seed=i)
        for name, content in (files or {}).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        for name in folders:
            (root / name).mkdir(parents=True, exist_ok=True)
        if extra is not None:
            extra(root)
    return write


def crafted_index(files: str, rows: int) -> Callable[[Path], None]:
    """An index file whose file list (raw metadata) or row count is wrong."""
    return lambda root: save_file({"embeddings": torch.zeros(rows, 32)}, str(root / "bad.safetensors"),
                                  metadata={FILES_KEY: files})


def class_folder(root: Path, name: str = "cls", classes: tuple[str, ...] = ("cat", "dog")) -> None:
    for i, label in enumerate(classes):
        write_png(root / name / label / f"{i}.png", seed=i)


def captioned_folder(root: Path, name: str = "capt", count: int = 3) -> None:
    for i in range(count):
        write_png(root / name / f"{i}.png", seed=i)
    (root / name / "captions.csv").write_text("file_name,text\n" + "".join(f"{i}.png,photo {i}\n" for i in range(count)))


A = ("--weights", "a.safetensors")
CLASSIFY = ("classify", "img.png")
LABELS = ("--labels", "cat,dog")
ONE_IMAGE = setup(images=("img.png",))
INDEXED = setup(links=("a.safetensors", "b.safetensors", "c.safetensors", "idx.safetensors"), images=("img.png",))
ZERO_SHOT = ("eval", "zero-shot", "--dataset")
RETRIEVAL = ("eval", "retrieval", "--dataset")

CASES = [
    # classify: the images, the labels, the templates and the model
    Case("classify-missing-image", ["classify", "missing.png", *LABELS, *A], ["missing.png", "does not exist"], setup()),
    Case("classify-not-an-image", ["classify", "notes.png", *LABELS, *A], ["notes.png", "not an image"],
         setup(files={"notes.png": "not an image"})),
    Case("classify-a-directory", ["classify", "imgs", *LABELS, *A], ["imgs", "directory"], setup(folders=("imgs",))),
    Case("classify-second-image-missing", [*CLASSIFY, "gone.png", *LABELS, *A], ["gone.png"], ONE_IMAGE),
    Case("classify-empty-labels", [*CLASSIFY, "--labels", ",", *A], ["--labels", "at least two"], ONE_IMAGE),
    Case("classify-blank-labels", [*CLASSIFY, "--labels", " , ,", *A], ["--labels", "at least two"], ONE_IMAGE),
    Case("classify-one-label", [*CLASSIFY, "--labels", "cat", *A], ["--labels", "at least two"], ONE_IMAGE),
    Case("classify-repeated-label-only", [*CLASSIFY, "--labels", "cat,cat", *A], ["--labels", "two distinct"],
         ONE_IMAGE),
    Case("classify-k-zero", [*CLASSIFY, *LABELS, "-k", "0", *A], ["-k", "1 or more"], ONE_IMAGE),
    Case("classify-k-negative", [*CLASSIFY, *LABELS, "-k", "-1", *A], ["-k", "1 or more"], ONE_IMAGE),
    Case("classify-template-without-slot", [*CLASSIFY, *LABELS, "--template", "a photo", *A], ["--template", "{}"],
         ONE_IMAGE),
    Case("classify-template-named-slot", [*CLASSIFY, *LABELS, "--template", "a {label}", *A],
         ["--template", "{label}"], ONE_IMAGE),
    Case("classify-no-model", [*CLASSIFY, *LABELS], ["--weights"], ONE_IMAGE),
    Case("classify-unknown-format", [*CLASSIFY, *LABELS, "--format", "xml", *A], ["--format", "json"], ONE_IMAGE),
    Case("classify-run-folder-without-text-tower", [*CLASSIFY, *LABELS, "--weights", "run"],
         ["run/trained.toml", "[text_encoder]"],
         setup(images=("img.png",), files={"run/trained.toml": '[dataset]\ntype = "digits"\n'})),
    Case("classify-run-folder-damaged-spec", [*CLASSIFY, *LABELS, "--weights", "run"], ["run/trained.toml", "damaged"],
         setup(images=("img.png",), files={"run/trained.toml": "[text_encoder\n"})),
    Case("classify-missing-weights", [*CLASSIFY, *LABELS, "--weights", "nowhere.safetensors"],
         ["nowhere.safetensors"], ONE_IMAGE),
    Case("classify-spec-without-image-encoder", [*CLASSIFY, *LABELS, "--spec", "clip.toml"], ["[image_encoder]"],
         setup(images=("img.png",), extra=lambda root: (root / "clip.toml").write_text(
             f'[text_encoder]\ntype = "clip-text"\nweights = "{ASSETS / "a.safetensors"}"\n'))),
    # search index: the folder, its images and the output
    Case("index-empty-folder", ["search", "index", "empty", "--out", "i.safetensors", *A], ["empty", "no images"],
         setup(folders=("empty",))),
    Case("index-missing-folder", ["search", "index", "nowhere", "--out", "i.safetensors", *A],
         ["nowhere", "does not exist"], setup()),
    Case("index-folder-is-a-file", ["search", "index", "img.png", "--out", "i.safetensors", *A],
         ["img.png", "not a directory"], ONE_IMAGE),
    Case("index-strict-corrupt-image", ["search", "index", "photos", "--out", "i.safetensors", "--strict", *A],
         ["photos/x.png", "not a readable image"],
         setup(images=("photos/a.png", "photos/b.png"), files={"photos/x.png": "not an image"})),
    Case("index-only-unreadable-images", ["search", "index", "photos", "--out", "i.safetensors", *A],
         ["photos", "none of its 2 image"], setup(files={"photos/x.png": "text", "photos/y.jpg": b"\xff\xd8junk"})),
    Case("index-out-exists", ["search", "index", "photos", "--out", "old.safetensors", *A],
         ["--out", "old.safetensors", "--overwrite"],
         setup(images=("photos/a.png",), files={"old.safetensors": "the user's file"})),
    Case("index-out-is-a-directory", ["search", "index", "photos", "--out", "photos", *A], ["--out", "directory"],
         setup(images=("photos/a.png",))),
    Case("index-batch-size-zero", ["search", "index", "photos", "--out", "i.safetensors", "--batch-size", "0", *A],
         ["--batch-size", "1 or more"], setup(images=("photos/a.png",))),
    Case("index-no-model", ["search", "index", "photos", "--out", "i.safetensors"], ["--weights"],
         setup(images=("photos/a.png",))),
    # search query: the index file, -k, the query and the encoder that must match the index
    Case("query-missing-index", ["search", "query", "nowhere.safetensors", "a cat"],
         ["nowhere.safetensors", "does not exist"], setup()),
    Case("query-index-is-a-directory", ["search", "query", "photos", "a cat"], ["photos", "directory"],
         setup(folders=("photos",))),
    Case("query-garbage-index", ["search", "query", "garbage.safetensors", "a cat"],
         ["garbage.safetensors", "not a search index"], setup(files={"garbage.safetensors": "garbage"})),
    Case("query-weights-not-an-index", ["search", "query", "a.safetensors", "a cat"],
         ["a.safetensors", "not a search index"], setup()),
    Case("query-index-files-not-json", ["search", "query", "bad.safetensors", "a cat"],
         ["bad.safetensors", FILES_KEY, "not JSON"], setup(extra=crafted_index("[not json", 2))),
    Case("query-index-rows-and-files-differ", ["search", "query", "bad.safetensors", "a cat"],
         ["bad.safetensors", "one row per file"], setup(extra=crafted_index('["a.png", "b.png", "c.png"]', 2))),
    Case("query-k-zero", ["search", "query", "idx.safetensors", "a cat", "-k", "0"], ["-k", "1 or more"], INDEXED),
    Case("query-k-negative", ["search", "query", "idx.safetensors", "a cat", "-k", "-1"], ["-k", "1 or more"],
         INDEXED),
    Case("query-text-and-image", ["search", "query", "idx.safetensors", "a cat", "--image", "img.png"],
         ["not both"], INDEXED),
    Case("query-neither-text-nor-image", ["search", "query", "idx.safetensors"], ["--image"], INDEXED),
    Case("query-image-missing", ["search", "query", "idx.safetensors", "--image", "gone.png"],
         ["gone.png", "does not exist"], INDEXED),
    Case("query-image-not-an-image", ["search", "query", "idx.safetensors", "--image", "notes.png"],
         ["notes.png", "not an image"], setup(links=("idx.safetensors", "a.safetensors"),
                                              files={"notes.png": "text"})),
    Case("query-text-other-width", ["search", "query", "idx.safetensors", "a cat", "--weights", "c.safetensors"],
         ["32-wide", "16-wide", "a.safetensors", "c.safetensors"], INDEXED),
    Case("query-image-other-width", ["search", "query", "idx.safetensors", "--image", "img.png", "--weights",
                                     "c.safetensors"], ["32-wide", "16-wide", "a.safetensors", "c.safetensors"],
         INDEXED),
    Case("query-text-same-width-other-weights", ["search", "query", "idx.safetensors", "a cat", "--weights",
                                                 "b.safetensors"], ["other weights", "a.safetensors", "b.safetensors"],
         INDEXED),
    Case("query-image-same-width-other-weights", ["search", "query", "idx.safetensors", "--image", "img.png",
                                                  "--weights", "b.safetensors"],
         ["other weights", "a.safetensors", "b.safetensors"], INDEXED),
    # tokenizer: the dataset argument, the sizes and the output
    Case("tokenizer-dataset-root-missing", ["tokenizer", '{"type": "imagefolder", "root": "nowhere"}', "--out",
                                            "t.json"], ["root", "nowhere"], setup(links=())),
    Case("tokenizer-dataset-captions-missing", ["tokenizer", '{"type": "flickr8k", "root": "flickr"}', "--out",
                                                "t.json"], ["flickr", "caption"],
         setup(links=(), images=("flickr/Images/a.jpg",))),
    Case("tokenizer-dataset-not-json", ["tokenizer", "dataset.json", "--out", "t.json"], ["not JSON", "dataset.json"],
         setup(links=())),
    Case("tokenizer-dataset-not-an-object", ["tokenizer", "[1]", "--out", "t.json"], ["JSON object", "type"],
         setup(links=())),
    Case("tokenizer-unknown-dataset-type", ["tokenizer", '{"type": "shpaes"}', "--out", "t.json"], ["shpaes", "shapes"],
         setup(links=())),
    Case("tokenizer-vocab-size-zero", ["tokenizer", SHAPES_JSON, "--vocab-size", "0", "--out", "t.json"],
         ["--vocab-size", "258"], setup(links=())),
    Case("tokenizer-vocab-size-negative", ["tokenizer", SHAPES_JSON, "--vocab-size", "-5", "--out", "t.json"],
         ["--vocab-size", "258"], setup(links=())),
    Case("tokenizer-vocab-size-below-bytes", ["tokenizer", SHAPES_JSON, "--vocab-size", "100", "--out", "t.json"],
         ["--vocab-size", "258"], setup(links=())),
    Case("tokenizer-context-length-zero", ["tokenizer", SHAPES_JSON, "--context-length", "0", "--out", "t.json"],
         ["--context-length", "at least 3"], setup(links=())),
    Case("tokenizer-context-length-negative", ["tokenizer", SHAPES_JSON, "--context-length", "-1", "--out", "t.json"],
         ["--context-length", "at least 3"], setup(links=())),
    Case("tokenizer-context-length-two", ["tokenizer", SHAPES_JSON, "--context-length", "2", "--out", "t.json"],
         ["--context-length", "at least 3"], setup(links=())),
    Case("tokenizer-every-zero", ["tokenizer", SHAPES_JSON, "--every", "0", "--out", "t.json"], ["--every"],
         setup(links=())),
    Case("tokenizer-out-is-a-directory", ["tokenizer", SHAPES_JSON, "--out", "run"], ["--out", "directory"],
         setup(links=(), folders=("run",))),
    Case("tokenizer-out-exists", ["tokenizer", SHAPES_JSON, "--out", "tokenizer.json"], ["tokenizer.json", "--overwrite"],
         setup(links=(), files={"tokenizer.json": "{}"})),
    # export-clip: the output and the model
    Case("export-out-exists", ["export-clip", "--out", "old.safetensors", *A], ["--out", "old.safetensors", "--overwrite"],
         setup(files={"old.safetensors": "the user's file"})),
    Case("export-out-is-a-directory", ["export-clip", "--out", "dir", *A], ["--out", "directory"],
         setup(folders=("dir",))),
    Case("export-transformers-out-not-empty", ["export-clip", "--out", "hf", "--format", "transformers", *A],
         ["--out", "not empty", "--overwrite"], setup(files={"hf/keep.txt": "mine"})),
    Case("export-transformers-out-is-a-file", ["export-clip", "--out", "hf", "--format", "transformers", *A],
         ["--out", "is a file"], setup(files={"hf": "a file"})),
    Case("export-unknown-format", ["export-clip", "--out", "x.safetensors", "--format", "onnx", *A], ["--format"],
         setup()),
    Case("export-no-model", ["export-clip", "--out", "x.safetensors"], ["--weights"], setup()),
    Case("export-siglip-to-transformers", ["export-clip", "--out", "hf", "--format", "transformers", "--weights",
                                           "siglip.safetensors"], ["logit bias"],
         setup(links=(), extra=lambda root: save_clip(siglip_clip(), root / "siglip.safetensors"))),
    # eval zero-shot / retrieval: the dataset and the options
    Case("eval-no-dataset-and-no-run", [*ZERO_SHOT[:2], *A], ["--dataset"], setup()),
    Case("eval-run-dataset-without-held-out-split", [*ZERO_SHOT[:2], "--spec", "run.toml"], ["run.toml", "shpaes"],
         setup(files={"run.toml": '[dataset]\ntype = "shpaes"\n'})),
    Case("zero-shot-unknown-dataset", [*ZERO_SHOT, "shpaes", *A], ["shpaes", "shapes"], setup()),
    Case("zero-shot-imagefolder-without-root", [*ZERO_SHOT, "imagefolder", *A], ["root", "missing"], setup()),
    Case("zero-shot-imagefolder-root-missing", [*ZERO_SHOT, "imagefolder", "--data", "root=nowhere", *A],
         ["root", "nowhere"], setup()),
    Case("zero-shot-imagefolder-no-labels", [*ZERO_SHOT, "imagefolder", "--data", "root=capt", *A],
         ["label", "retrieval"], setup(extra=captioned_folder)),
    Case("zero-shot-imagefolder-one-class", [*ZERO_SHOT, "imagefolder", "--data", "root=cls", *A],
         ["two classes"], setup(extra=lambda root: class_folder(root, classes=("cat",)))),
    Case("zero-shot-imagefolder-test-split", [*ZERO_SHOT, "imagefolder", "--data", "root=cls", "--data", "split=test",
                                              *A], ["split", "test"], setup(extra=class_folder)),
    Case("zero-shot-cifar10-root-missing", [*ZERO_SHOT, "cifar10", "--data", "root=nowhere", *A], ["root", "nowhere"],
         setup()),
    Case("zero-shot-limit-zero", [*ZERO_SHOT, "digits", "--limit", "0", *A], ["--limit", "1 or more"], setup()),
    Case("zero-shot-batch-size-zero", [*ZERO_SHOT, "digits", "--batch-size", "0", *A], ["--batch-size", "1 or more"],
         setup()),
    Case("zero-shot-out-is-a-directory", [*ZERO_SHOT, "digits", "--limit", "20", "--out", "results", *A],
         ["--out", "directory"], setup(folders=("results",))),
    Case("zero-shot-malformed-data-option", [*ZERO_SHOT, "digits", "--data", "split", *A], ["KEY=VALUE"], setup()),
    Case("retrieval-imagefolder-root-missing", [*RETRIEVAL, "imagefolder", "--data", "root=nowhere", *A],
         ["root", "nowhere"], setup()),
    Case("retrieval-imagefolder-empty-val-split", [*RETRIEVAL, "imagefolder", "--data", "root=capt", "--data",
                                                   "split=val", *A], ["capt", "'val' split", "empty"],
         setup(extra=captioned_folder)),
    Case("retrieval-limit-negative", [*RETRIEVAL, "digits", "--limit", "-3", *A], ["--limit", "1 or more"], setup()),
    Case("retrieval-unknown-data-field", [*RETRIEVAL, "digits", "--data", "colour=red", *A], ["colour", "unknown"],
         setup()),
]


@pytest.fixture(scope="module", autouse=True)
def assets(tmp_path_factory):
    """Three tiny random CLIPs (``a`` and ``b`` 32 wide with different weights, ``c`` 16 wide)
    and ``idx.safetensors``, an index of two images built with ``a``."""
    global ASSETS
    ASSETS = tmp_path_factory.mktemp("clip-assets")
    for name, width, seed in (("a", 32, 0), ("b", 32, 1), ("c", 16, 0)):
        torch.manual_seed(seed)
        save_clip(tiny_clip(width), ASSETS / f"{name}.safetensors")
    for i in range(2):
        write_png(ASSETS / "photos" / f"{i}.png", seed=i)
    code = main(["search", "index", str(ASSETS / "photos"), "--out", str(ASSETS / "idx.safetensors"),
                             "--weights", str(ASSETS / "a.safetensors")])
    sfumato.set_registry(None)
    assert code == 0
    return ASSETS


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    check(case, tmp_path, capsys, monkeypatch)


def test_the_table_is_large_and_its_ids_unique():
    assert len(CASES) >= 60 and len({case.id for case in CASES}) == len(CASES)


def test_classify_checks_every_image_before_classifying_any(tmp_path, capsys, monkeypatch):
    """A bad image late in the list stops the command before the first result is printed."""
    monkeypatch.chdir(tmp_path)
    ONE_IMAGE(tmp_path)
    code, out, err = run_cli([*CLASSIFY, "gone.png", *LABELS, "--weights", str(ASSETS / "a.safetensors")], capsys)
    assert code == 2 and "gone.png" in err and out == ""


def test_index_skips_a_corrupt_image_and_names_it(tmp_path, capsys, monkeypatch):
    """Without ``--strict`` one bad file does not abort the index: it is left out and named."""
    monkeypatch.chdir(tmp_path)
    setup(images=("photos/a.png", "photos/b.png"), files={"photos/x.png": "not an image"})(tmp_path)
    code, out, err = run_cli(["search", "index", "photos", "--out", "i.safetensors", *A], capsys)
    assert code == 0, err
    assert "indexed 2 images" in out
    assert "skipped 1 unreadable image" in err and "photos/x.png" in err
    assert SearchIndex.load("i.safetensors").files == ["a.png", "b.png"]


def test_index_overwrite_replaces_the_old_index(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup(images=("photos/a.png",), files={"i.safetensors": "old"})(tmp_path)
    code, _, err = run_cli(["search", "index", "photos", "--out", "i.safetensors", "--overwrite", *A], capsys)
    assert code == 0, err
    assert SearchIndex.load("i.safetensors").files == ["a.png"]


def test_index_records_the_encoders_identity(tmp_path):
    index = SearchIndex.load(ASSETS / "idx.safetensors")
    identity = index.identity
    assert identity["embed_dim"] == 32 == index.embed_dim
    assert identity["image_encoder"]["weights"] == str(ASSETS / "a.safetensors")
    assert identity["image_encoder"]["sha256"] != identity["text_encoder"]["sha256"]


def test_query_with_the_recorded_or_the_same_clip_is_accepted(tmp_path, capsys, monkeypatch):
    """The identity check refuses only other models: the recorded CLIP, and the same weights
    under another path, both answer."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "copy.safetensors").write_bytes((ASSETS / "a.safetensors").read_bytes())
    index = str(ASSETS / "idx.safetensors")
    for extra in ([], ["--weights", "copy.safetensors"]):
        code, out, err = run_cli(["search", "query", index, "a cat", "-k", "1", *extra], capsys)
        assert code == 0, err
        assert len(out.strip().splitlines()) == 1


def test_an_index_without_identity_is_checked_for_width_and_warns(tmp_path, capsys, monkeypatch):
    """Indexes written before identities were recorded still answer, with a warning."""
    monkeypatch.chdir(tmp_path)
    old = SearchIndex.load(ASSETS / "idx.safetensors")
    old.identity = None
    old.save(tmp_path / "old.safetensors")
    with pytest.warns(UserWarning, match="cannot be checked"):
        code, _, err = run_cli(["search", "query", "old.safetensors", "a cat", "--weights",
                                str(ASSETS / "b.safetensors")], capsys)
    assert code == 0, err
    code, _, err = run_cli(["search", "query", "old.safetensors", "a cat", "--weights", str(ASSETS / "c.safetensors")],
                           capsys)
    assert code == 2 and "16-wide" in err


def test_a_malformed_identity_is_refused(tmp_path):
    save_file({"embeddings": torch.zeros(1, 32)}, str(tmp_path / "i.safetensors"),
              metadata={FILES_KEY: '["a.png"]', IDENTITY_KEY: '{"embed_dim": "wide"}'})
    with pytest.raises(sfumato.SfumatoError, match=IDENTITY_KEY):
        SearchIndex.load(tmp_path / "i.safetensors")


@pytest.mark.parametrize(("command", "write", "count"), [("zero-shot", class_folder, 2),
                                                        ("retrieval", captioned_folder, 3)])
def test_eval_on_an_image_folder_uses_all_of_it(command, write, count, tmp_path, capsys, monkeypatch):
    """An image folder has no test split: the evaluation reads every image."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "data")
    code, _, err = run_cli(["eval", command, "--dataset", "imagefolder", "--data", "root=data", "--out", "r.json",
                            "--weights", str(ASSETS / "a.safetensors")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["dataset"] == {"type": "imagefolder", "root": "data"}
    assert (report["tasks"]["label"]["images"] if command == "zero-shot" else report["images"]) == count


def test_tokenizer_warns_once_when_captions_exceed_the_context(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["tokenizer", SHAPES_JSON, "--context-length", "4", "--out", "t.json"], capsys)
    assert code == 0 and err.count("warning:") == 1 and "--context-length 4" in err
