"""End to end: ``sfumato classify`` and ``sfumato search`` with a tiny random CLIP saved by the
test, on images the test writes."""

from __future__ import annotations

import numpy as np
import pytest
import sfumato
from PIL import Image
from sfumato_clip import ZeroShotClassifier
from sfumato_clip.images import load_image

cli = pytest.importorskip("sfumato.cli")


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(["a.png", "b.jpg", "c.png", "nested/d.png", "e.png"]):
        size = (40 + 8 * i, 32)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_classify_prints_top_k_labels_like_the_api(tiny_clip_file, image_folder, capsys):
    images = [str(image_folder / "a.png"), str(image_folder / "c.png")]
    code = cli.main(["classify", *images, "--labels", "cat, dog,car", "-k", "2", "--weights", tiny_clip_file])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(images[0])

    text = sfumato.build("encoder", {"type": "clip-text", "weights": tiny_clip_file}).eval()
    image = sfumato.build("encoder", {"type": "clip-image", "weights": tiny_clip_file}).eval()
    (expected,) = ZeroShotClassifier(text, image, ["cat", "dog", "car"]).predict(load_image(images[0], 32)[None], k=2)
    printed = lines[0].split(": ", 1)[1].split(", ")
    assert [p.split()[0] for p in printed] == expected.labels
    assert [float(p.split()[1]) for p in printed] == pytest.approx(expected.probs, abs=1e-3)


def test_classify_reads_a_spec_file(tiny_clip_file, image_folder, tmp_path, capsys):
    spec = tmp_path / "clip.toml"
    spec.write_text(f'[text_encoder]\ntype = "clip-text"\nweights = "{tiny_clip_file}"\n\n'
                    f'[image_encoder]\ntype = "clip-image"\nweights = "{tiny_clip_file}"\n')
    code = cli.main(["classify", str(image_folder / "a.png"), "--labels", "cat,dog", "--spec", str(spec)])
    assert code == 0
    assert capsys.readouterr().out.count(":") == 1


def test_search_index_then_query_by_text_and_by_image(tiny_clip_file, image_folder, tmp_path, capsys):
    index = tmp_path / "index.safetensors"
    assert cli.main(["search", "index", str(image_folder), "--out", str(index), "--weights", tiny_clip_file,
                     "--batch-size", "2"]) == 0
    assert "indexed 5 images" in capsys.readouterr().out

    # The index remembers its encoders, so a query needs no --weights.
    assert cli.main(["search", "query", str(index), "a red car", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    scores = [float(line.split()[0]) for line in lines]
    assert scores == sorted(scores, reverse=True)

    assert cli.main(["search", "query", str(index), "--image", str(image_folder / "nested/d.png"), "-k", "1"]) == 0
    score, path = capsys.readouterr().out.split()
    assert path.endswith("nested/d.png") and float(score) == pytest.approx(1.0, abs=1e-4)


def test_search_query_without_text_or_image_is_an_error(tiny_clip_file, image_folder, tmp_path, capsys):
    index = tmp_path / "index.safetensors"
    cli.main(["search", "index", str(image_folder), "--out", str(index), "--weights", tiny_clip_file])
    assert cli.main(["search", "query", str(index)]) == 2
    assert "--image" in capsys.readouterr().err
