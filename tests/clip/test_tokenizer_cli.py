"""``sfumato tokenizer`` trains a caption tokenizer that a clip-text encoder then uses."""

from __future__ import annotations

import json

import sfumato
from sfumato.cli import main


def test_tokenizer_command_trains_on_dataset_captions(tmp_path, capsys):
    out = tmp_path / "tokenizer.json"
    dataset = json.dumps({"type": "shapes", "length": 60, "resolution": 8})
    assert main(["tokenizer", dataset, "--vocab-size", "640", "--context-length", "24", "--out", str(out)]) == 0
    assert "distinct captions" in capsys.readouterr().out
    encoder = sfumato.build("encoder", {
        "type": "clip-text", "tokenizer": str(out),
        "architecture": {"embed_dim": 16, "text": {"width": 16, "layers": 1, "heads": 2, "mlp_width": 32,
                                                    "vocab_size": 640, "context_length": 24, "eos_token_id": 1},
                         "vision": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "heads": 2, "mlp_width": 32}},
    })
    caption = sfumato.build("dataset", {"type": "shapes", "length": 60, "resolution": 8})[0]["caption"]
    words = caption.replace(",", " ,").split()
    # every word of the training captions became one token: start + words + end
    assert int(encoder.tokenizer([caption]).mask.sum()) == len(words) + 2
    assert encoder.encode(["a red circle"]).tokens.shape == (1, 24, 16)


def test_tokenizer_command_rejects_bad_json(tmp_path, capsys):
    assert main(["tokenizer", "{shapes}", "--out", str(tmp_path / "t.json")]) == 2
    assert "not JSON" in capsys.readouterr().err


def test_tokenizer_command_reports_the_longest_caption_before_truncation(tmp_path, capsys):
    """A caption longer than --context-length is measured whole, so the report says what fits them all."""
    out = tmp_path / "tokenizer.json"
    dataset = json.dumps({"type": "shapes", "length": 60, "resolution": 8})
    assert main(["tokenizer", dataset, "--vocab-size", "640", "--context-length", "4", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    longest = int(captured.out.split("the longest caption is ")[1].split()[0])
    tokenizer = sfumato.build("encoder", {"type": "clip-text", "tokenizer": str(out), "architecture": {
        "embed_dim": 16, "text": {"width": 16, "layers": 1, "heads": 2, "mlp_width": 32, "vocab_size": 640,
                                  "context_length": 77, "eos_token_id": 1},
        "vision": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "heads": 2, "mlp_width": 32}}}).tokenizer
    captions = {c for i in range(60) for c in sfumato.build("dataset", json.loads(dataset))[i]["captions"]}
    assert longest == max(len(ids) + 2 for ids in tokenizer.token_ids(sorted(captions))) > 4
    assert f"{longest} fits them all" in captured.err
