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


@pytest.fixture(scope="module")
def scaled_clips(tmp_path_factory):
    """The same tiny CLIP saved with two learned logit scales, log 100 and log 2."""
    import math

    import torch
    from sfumato_clip import CLIP, save_clip
    from sfumato_clip.config import PRESETS

    folder = tmp_path_factory.mktemp("scaled")
    torch.manual_seed(0)
    model = CLIP(PRESETS["tiny"])
    paths = {}
    for name, scale in (("sharp", 100.0), ("soft", 2.0)):
        model.logit_scale.data.fill_(math.log(scale))
        paths[name] = save_clip(model, folder / f"{name}.safetensors")
    return paths


def classify_json(argv, capsys) -> dict:
    import json

    assert cli.main(["classify", *map(str, argv), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_classify_uses_the_learned_logit_scale(scaled_clips, image_folder, capsys):
    """Probabilities are softmax(exp(logit_scale) * cosine) with the model's own scale, not a fixed 100."""
    import torch

    image = image_folder / "a.png"
    sharp = classify_json([image, "--labels", "cat,dog,car", "--weights", scaled_clips["sharp"]], capsys)
    soft = classify_json([image, "--labels", "cat,dog,car", "--weights", scaled_clips["soft"]], capsys)
    assert sharp["logit_scale"] == pytest.approx(100.0) and soft["logit_scale"] == pytest.approx(2.0)
    assert sharp["results"][0]["labels"] == soft["results"][0]["labels"]
    # the same cosines: log-odds of the top two scale with the logit scale
    logodds = [torch.tensor(r["results"][0]["probs"][:2]).log().diff().item() for r in (sharp, soft)]
    assert logodds[0] == pytest.approx(50 * logodds[1], rel=1e-3)


def test_classify_writes_csv_and_drops_repeated_labels(scaled_clips, image_folder, capsys):
    images = [str(image_folder / "a.png"), str(image_folder / "c.png")]
    assert cli.main(["classify", *images, "--labels", "cat,dog,cat", "-k", "2", "--format", "csv",
                     "--weights", str(scaled_clips["soft"])]) == 0
    out, err = capsys.readouterr()
    rows = [line.split(",") for line in out.strip().splitlines()]
    assert rows[0] == ["image", "rank", "label", "prob"] and len(rows) == 5
    assert {row[2] for row in rows[1:]} == {"cat", "dog"} and [row[1] for row in rows[1:3]] == ["1", "2"]
    assert sum(float(row[3]) for row in rows[1:3]) == pytest.approx(1.0, abs=1e-5)
    assert err.count("warning:") == 1 and "'cat'" in err


def test_classify_truncates_long_templates_with_one_warning(scaled_clips, image_folder, capsys):
    template = "a photo of a {} " + "with many more words " * 20
    with pytest.warns(UserWarning) as caught:
        classify_json([image_folder / "a.png", "--labels", "cat,dog,car", "--template", template,
                       "--template", "a {}", "--weights", scaled_clips["soft"]], capsys)
    truncation = [w for w in caught if "truncated" in str(w.message)]
    assert len(truncation) == 1 and "3 of 6 caption(s)" in str(truncation[0].message)
