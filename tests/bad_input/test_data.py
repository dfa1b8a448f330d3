"""Bad datasets and evaluation options: ``sfumato train`` with broken ``cifar10`` (both versions)
and ``imagefolder`` settings, and ``sfumato eval geneval`` / ``eval digits`` options. Each row
exits 2 naming the culprit, with no traceback and nothing written; the ordinary tests below hold
the CIFAR-10 loader to both real formats and prove a crafted pickle never runs."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from bad_input.harness import Case, check
from PIL import Image
from sfumato_data import Cifar10Dataset, DatasetError

LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
TINY_CLIP = {"text_encoder": {"type": "clip-text", "architecture": "tiny"},
             "image_encoder": {"type": "clip-image", "architecture": "tiny"}}


class RunsAShellCommand:
    """What a crafted batch holds: unpickling it calls ``os.system`` (``posix.system``)."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


# ---------------------------------------------------------------- files in the real formats


class Python2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle wrote the official batches at protocol 2: ``bytes`` become
    Python 2 ``str`` (``SHORT_BINSTRING`` / ``BINSTRING``), where Python 3 would call
    ``_codecs.encode``; numpy arrays go through ``_reconstruct`` as they did then."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def dump(content: Any, path: Path, protocol: int = 2) -> None:
    """Pickle ``content`` to ``path``: as the official files at protocol 2, else as Python 3 does."""
    buffer = io.BytesIO()
    (Python2Pickler(buffer, protocol) if protocol == 2 else pickle.Pickler(buffer, protocol)).dump(content)
    path.write_bytes(buffer.getvalue())


def cifar_rows(count: int, first_label: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(count + first_label)
    return rng.integers(0, 256, (count, 3072), dtype=np.uint8), [(first_label + i) % 10 for i in range(count)]


def write_python_cifar(folder: Path, protocol: int = 2, count: int = 2) -> None:
    """``cifar-10-batches-py``: pickled dicts as the official archive holds them (protocol 2,
    like the Python 2 files, unless ``protocol`` says otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    dump({b"num_cases_per_batch": count, b"label_names": LABEL_NAMES, b"num_vis": 3072}, folder / "batches.meta",
         protocol)
    for i, name in enumerate([f"data_batch_{n}" for n in range(1, 6)] + ["test_batch"]):
        data, labels = cifar_rows(count, first_label=count * i)
        dump({b"batch_label": b"batch", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * count},
             folder / name, protocol)


def write_binary_cifar(folder: Path, count: int = 2) -> None:
    """``cifar-10-batches-bin``: records of a label byte and 3072 pixel bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batches.meta.txt").write_text("\n".join(n.decode() for n in LABEL_NAMES) + "\n\n")
    for i, name in enumerate([f"data_batch_{n}" for n in range(1, 6)] + ["test_batch"]):
        data, labels = cifar_rows(count, first_label=count * i)
        records = np.concatenate([np.array(labels, np.uint8)[:, None], data], axis=1)  # (N, 3073)
        (folder / f"{name}.bin").write_bytes(records.tobytes())


def write_png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


# ---------------------------------------------------------------- scratch folders for the table


def train_spec(dataset: dict[str, Any], task: dict[str, Any] | None = None,
               *writers: Callable[[Path], None]) -> Callable[[Path], None]:
    """A scratch folder with ``train.json`` (a tiny CLIP on ``dataset``, out ``run``) and the
    dataset files the ``writers`` make."""
    def write(root: Path) -> None:
        spec = {"task": task or {"type": "train-clip"}, "dataset": {"resolution": 16, **dataset}, **TINY_CLIP,
                "train": {"steps": 1, "batch_size": 2, "out": "run", "progress": False}}
        (root / "train.json").write_text(json.dumps(spec))
        for writer in writers:
            writer(root)
    return write


def cifar(write_version: Callable[[Path], None], *changes: Callable[[Path], None]) -> Callable[[Path], None]:
    """One CIFAR-10 version under ``cifar/``, then ``changes`` applied to that folder."""
    def write(root: Path) -> None:
        write_version(root / "cifar")
        for change in changes:
            change(root / "cifar")
    return write


def python_cifar(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    return cifar(write_python_cifar, *changes)


def binary_cifar(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    return cifar(write_binary_cifar, *changes)


def pickled(name: str, content: Any) -> Callable[[Path], None]:
    return lambda folder: dump(content, folder / name)


def raw(name: str, content: bytes | str) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return write


def removed(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def images(*names: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        for i, name in enumerate(names):
            write_png(root / name, seed=i)
    return write


def record(label: int) -> bytes:
    return bytes([label]) + bytes(3072)


CIFAR = {"type": "cifar10", "root": "cifar"}
FOLDER = {"type": "imagefolder", "root": "photos"}
TRAIN = ["train", "train.json"]
ONE_ROW = np.zeros((1, 3072), np.uint8)
CLASS_IMAGES = images("photos/cat/0.png", "photos/dog/1.png")
EVAL_MODEL = ["--model", "shapes"]

CASES = [
    # train on CIFAR-10, python version: missing files, crafted and broken pickles
    Case("cifar-root-missing", TRAIN, ["root", "cifar", "does not exist"], train_spec(CIFAR)),
    Case("cifar-no-batches", TRAIN, ["cifar", "batches.meta", "batches.meta.txt"],
         train_spec(CIFAR, None, lambda root: (root / "cifar").mkdir())),
    Case("cifar-batch-missing", TRAIN, ["data_batch_3", "missing"],
         train_spec(CIFAR, None, python_cifar(removed("data_batch_3")))),
    Case("cifar-test-batch-missing", [*TRAIN, "--set", "dataset.split=test"], ["test_batch", "missing"],
         train_spec(CIFAR, None, python_cifar(removed("test_batch")))),
    Case("cifar-crafted-batch-runs-no-code", TRAIN, ["data_batch_1", "refused", "posix.system"],
         train_spec(CIFAR, None, python_cifar(pickled("data_batch_1", RunsAShellCommand())))),
    Case("cifar-crafted-array-in-batch", TRAIN, ["data_batch_2", "refused"],
         train_spec(CIFAR, None, python_cifar(pickled("data_batch_2", {b"data": RunsAShellCommand(),
                                                                        b"labels": [0]})))),
    Case("cifar-crafted-meta-runs-no-code", TRAIN, ["batches.meta", "refused"],
         train_spec(CIFAR, None, python_cifar(pickled("batches.meta", {b"label_names": RunsAShellCommand()})))),
    Case("cifar-truncated-batch", TRAIN, ["data_batch_2", "not a CIFAR-10 python pickle"],
         train_spec(CIFAR, None, python_cifar(lambda f: (f / "data_batch_2").write_bytes(
             (f / "data_batch_2").read_bytes()[:100])))),
    Case("cifar-batch-not-a-dict", TRAIN, ["data_batch_1", "dict"],
         train_spec(CIFAR, None, python_cifar(pickled("data_batch_1", [1, 2, 3])))),
    Case("cifar-batch-without-labels", TRAIN, ["data_batch_4", "b'labels'"],
         train_spec(CIFAR, None, python_cifar(pickled("data_batch_4", {b"data": ONE_ROW})))),
    Case("cifar-batch-wrong-shape", TRAIN, ["data_batch_3", "uint8 [N, 3072]"],
         train_spec(CIFAR, None, python_cifar(pickled("data_batch_3", {b"data": np.zeros((2, 100), np.uint8),
                                                                        b"labels": [0, 1]})))),
    Case("cifar-batch-label-out-of-range", TRAIN, ["data_batch_1", "0..9"],
         train_spec(CIFAR, None, python_cifar(pickled("data_batch_1", {b"data": ONE_ROW, b"labels": [12]})))),
    Case("cifar-meta-nine-names", TRAIN, ["batches.meta", "10 class names"],
         train_spec(CIFAR, None, python_cifar(pickled("batches.meta", {b"label_names": LABEL_NAMES[:9]})))),
    # train on CIFAR-10, binary version
    Case("cifar-bin-partial-record", TRAIN, ["data_batch_2.bin", "3073"],
         train_spec(CIFAR, None, binary_cifar(raw("data_batch_2.bin", record(1) * 2 + b"12345")))),
    Case("cifar-bin-empty-batch", TRAIN, ["data_batch_5.bin", "0 bytes"],
         train_spec(CIFAR, None, binary_cifar(raw("data_batch_5.bin", b"")))),
    Case("cifar-bin-label-out-of-range", TRAIN, ["data_batch_1.bin", "0..9"],
         train_spec(CIFAR, None, binary_cifar(raw("data_batch_1.bin", record(3) + record(10))))),
    Case("cifar-bin-meta-nine-names", TRAIN, ["batches.meta.txt", "10 class names"],
         train_spec(CIFAR, None, binary_cifar(raw("batches.meta.txt", "\n".join(["cat"] * 9))))),
    Case("cifar-bin-meta-not-utf8", TRAIN, ["batches.meta.txt", "not UTF-8"],
         train_spec(CIFAR, None, binary_cifar(raw("batches.meta.txt", b"\xff\xfe\xfa cat\n")))),
    Case("cifar-bin-batch-missing", TRAIN, ["data_batch_3.bin", "missing"],
         train_spec(CIFAR, None, binary_cifar(removed("data_batch_3.bin")))),
    Case("cifar-unknown-split", [*TRAIN, "--set", "dataset.split=val"], ["split", "val"],
         train_spec(CIFAR, None, python_cifar())),
    # train on an image folder
    Case("imagefolder-root-missing", TRAIN, ["root", "photos", "does not exist"], train_spec(FOLDER)),
    Case("imagefolder-root-is-a-file", TRAIN, ["root", "photos", "a file, not a directory"],
         train_spec(FOLDER, None, raw("photos", "a file"))),
    Case("imagefolder-empty", TRAIN, ["photos", "no images"],
         train_spec(FOLDER, None, lambda root: (root / "photos").mkdir())),
    Case("imagefolder-images-without-captions-or-classes", TRAIN, ["photos", "2 image(s)", "captions.csv", "class sub-folders"],
         train_spec(FOLDER, None, images("photos/a.png", "photos/b.png"))),
    Case("imagefolder-metadata-not-json", TRAIN, ["metadata.jsonl:2", "not a JSON object"],
         train_spec(FOLDER, None, images("photos/a.png"),
                    raw("photos/metadata.jsonl", '{"file_name": "a.png", "text": "a"}\n{oops\n'))),
    Case("imagefolder-metadata-not-utf8", TRAIN, ["metadata.jsonl", "not UTF-8"],
         train_spec(FOLDER, None, images("photos/a.png"),
                    raw("photos/metadata.jsonl", b'{"file_name": "a.png", "text": "caf\xe9"}\n'))),
    Case("imagefolder-metadata-missing-column", TRAIN, ["metadata.jsonl:1", "'caption'"],
         train_spec({**FOLDER, "caption_column": "caption"}, None, images("photos/a.png"),
                    raw("photos/metadata.jsonl", '{"file_name": "a.png", "text": "a"}\n'))),
    Case("imagefolder-csv-not-utf8", TRAIN, ["captions.csv", "not UTF-8"],
         train_spec(FOLDER, None, images("photos/a.png"), raw("photos/captions.csv", b"file_name,text\na.png,\xff\n"))),
    Case("imagefolder-csv-wrong-header", TRAIN, ["captions.csv", "file_name,text"],
         train_spec(FOLDER, None, images("photos/a.png"), raw("photos/captions.csv", "name,words\na.png,a\n"))),
    Case("imagefolder-csv-field-too-long", TRAIN, ["captions.csv", "field larger than field limit"],
         train_spec(FOLDER, None, images("photos/a.png"),
                    raw("photos/captions.csv", "file_name,text\na.png," + "word " * 30_000 + "\n"))),
    Case("imagefolder-csv-names-missing-image", TRAIN, ["captions.csv", "gone.png"],
         train_spec(FOLDER, None, images("photos/a.png"),
                    raw("photos/captions.csv", "file_name,text\na.png,one\ngone.png,two\n"))),
    Case("imagefolder-csv-empty", TRAIN, ["captions.csv", "no rows"],
         train_spec(FOLDER, None, images("photos/a.png"), raw("photos/captions.csv", "file_name,text\n"))),
    Case("imagefolder-empty-val-split", [*TRAIN, "--set", "dataset.split=val"], ["photos", "'val' split", "empty",
                                                                                  "val_fraction"],
         train_spec(FOLDER, None, CLASS_IMAGES)),
    Case("imagefolder-val-fraction-above-one", [*TRAIN, "--set", "dataset.val_fraction=1.5"], ["val_fraction"],
         train_spec(FOLDER, None, CLASS_IMAGES)),
    Case("imagefolder-caption-template-unknown-slot", TRAIN, ["caption_template", "{name}"],
         train_spec({**FOLDER, "caption_template": "a {name}"}, None, CLASS_IMAGES)),
    Case("imagefolder-resolution-zero", [*TRAIN, "--set", "dataset.resolution=0"], ["resolution"],
         train_spec(FOLDER, None, CLASS_IMAGES)),
    Case("imagefolder-fewer-images-than-a-batch", [*TRAIN, "--set", "train.batch_size=4"], ["batch_size"],
         train_spec(FOLDER, None, CLASS_IMAGES)),
    Case("finetune-fewer-task-labels-than-classes", TRAIN, ["labels", "2"],
         train_spec(FOLDER, {"type": "train-clip-finetune", "labels": ["cat"], "projection_dim": 8}, CLASS_IMAGES)),
    # eval geneval / digits: options checked before any image is generated
    Case("geneval-unknown-model", ["eval", "geneval", "--model", "shapez"], ["shapez", "shapes"]),
    Case("geneval-spec-missing", ["eval", "geneval", "--spec", "nowhere.toml"], ["nowhere.toml"]),
    Case("geneval-seed-negative", ["eval", "geneval", *EVAL_MODEL, "--seed", "-1"], ["--seed", "0.."]),
    Case("geneval-seed-too-large", ["eval", "geneval", *EVAL_MODEL, "--seed", str(2**64)], ["--seed", "0.."]),
    Case("geneval-seed-not-a-number", ["eval", "geneval", *EVAL_MODEL, "--seed", "one"], ["--seed", "one"]),
    Case("geneval-out-is-a-directory", ["eval", "geneval", *EVAL_MODEL, "--out", "results"], ["--out", "directory"],
         lambda root: (root / "results").mkdir()),
    Case("geneval-unknown-task", ["eval", "geneval", *EVAL_MODEL, "--task", "colour"], ["colour", "colors"]),
    Case("geneval-images-per-prompt-zero", ["eval", "geneval", *EVAL_MODEL, "--images-per-prompt", "0"],
         ["--images-per-prompt", "1 or more"]),
    Case("digits-per-class-zero", ["eval", "digits", "--model", "digits", "--per-class", "0"],
         ["--per-class", "1 or more"]),
    Case("digits-seed-negative", ["eval", "digits", "--model", "digits", "--seed", "-5"], ["--seed", "0.."]),
    Case("digits-out-is-a-directory", ["eval", "digits", "--model", "digits", "--out", "results"],
         ["--out", "directory"], lambda root: (root / "results").mkdir()),
    Case("digits-prompt-without-slot", ["eval", "digits", "--model", "digits", "--per-class", "1", "--prompt",
                                        "a digit"], ["template", "{}"]),
]

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    check(case, tmp_path, capsys, monkeypatch)


def test_the_table_is_large_and_its_ids_unique():
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)


# ---------------------------------------------------------------- CIFAR-10 in both real formats


def test_a_crafted_batch_is_refused_before_its_code_runs(tmp_path, monkeypatch):
    """The restricted unpickler refuses ``posix.system`` by name; the shell command never runs."""
    monkeypatch.chdir(tmp_path)
    write_python_cifar(tmp_path / "cifar")
    pickled("data_batch_1", {b"data": RunsAShellCommand(), b"labels": [0]})(tmp_path / "cifar")
    with pytest.raises(DatasetError, match=r"data_batch_1.*refused to load posix\.system"):
        Cifar10Dataset.from_spec({"root": str(tmp_path / "cifar")})
    assert not (tmp_path / "pwned").exists()
    # the same file under plain pickle would have run it: the test's crafted batch is real
    with open(tmp_path / "cifar" / "data_batch_1", "rb") as f:
        pickle.load(f, encoding="bytes")
    assert (tmp_path / "pwned").exists()


@pytest.mark.parametrize("protocol", [2, 5])
def test_python_batches_load_as_written_by_python_2_and_by_python_3(protocol, tmp_path):
    """Protocol 2 as the official files (arrays via ``_reconstruct``), protocol 5 a batch
    rewritten by Python 3 (arrays via ``numpy._core.numeric._frombuffer``)."""
    write_python_cifar(tmp_path / "cifar-10-batches-py", protocol)
    data = Cifar10Dataset.from_spec({"root": str(tmp_path), "split": "test"})
    rows, labels = cifar_rows(2, first_label=10)
    assert len(data) == 2 and [data[i]["label"] for i in range(2)] == labels
    assert data[1]["image"][0, 0, 0].item() == pytest.approx(rows[1][0] / 127.5 - 1, abs=1e-6)


def test_the_official_numpy_1_global_names_are_admitted(tmp_path):
    """The real files name ``numpy.core.multiarray._reconstruct``, a module numpy 2 renamed."""
    write_python_cifar(tmp_path, protocol=2)
    body = (tmp_path / "test_batch").read_bytes()
    old = body.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in old
    (tmp_path / "test_batch").write_bytes(old)
    assert len(Cifar10Dataset.from_spec({"root": str(tmp_path), "split": "test"})) == 2


def test_binary_version_reads_labels_and_row_major_planes(tmp_path):
    write_binary_cifar(tmp_path / "cifar-10-batches-bin", count=3)
    train = Cifar10Dataset.from_spec({"root": str(tmp_path)})
    assert len(train) == 15 and train.label_names[1] == "automobile"
    assert [train[i]["label"] for i in range(4)] == [0, 1, 2, 3]
    assert train[1]["caption"] == "a photo of an automobile"
    rows, _ = cifar_rows(3, first_label=3)  # item 4 is the second row of data_batch_2
    image = train[4]["image"]
    for channel, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert image[channel, y, x].item() == pytest.approx(rows[1][channel * 1024 + y * 32 + x] / 127.5 - 1,
                                                            abs=1e-6)


def test_binary_and_python_versions_give_the_same_items(tmp_path):
    write_python_cifar(tmp_path / "py")
    write_binary_cifar(tmp_path / "bin")
    python = Cifar10Dataset.from_spec({"root": str(tmp_path / "py"), "split": "test"})
    binary = Cifar10Dataset.from_spec({"root": str(tmp_path / "bin"), "split": "test"})
    assert np.array_equal(python.images, binary.images) and np.array_equal(python.labels, binary.labels)
    assert python.label_names == binary.label_names


def test_the_binary_version_is_preferred_when_both_are_present(tmp_path):
    """A folder holding both versions is read without unpickling anything."""
    write_binary_cifar(tmp_path / "cifar-10-batches-bin")
    write_python_cifar(tmp_path / "cifar-10-batches-py")
    pickled("test_batch", RunsAShellCommand())(tmp_path / "cifar-10-batches-py")
    assert len(Cifar10Dataset.from_spec({"root": str(tmp_path), "split": "test"})) == 2
