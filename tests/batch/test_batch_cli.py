"""``sfumato generate --prompts FILE --out DIR``: one image per line plus a manifest, batched,
deterministic per line, resumable after a crash, and replayable line by line with ``--from``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sfumato
from sfumato.cli import main
from sfumato.generation_requests import SampleRunner, lock_sha256
from sfumato.outputs import read_lock

from batch.model_folder import write_model_folder

LINES = [
    {"prompt": "a red circle"},
    {"prompt": "a blue square", "negative": "green"},
    {"prompt": "two yellow circles", "steps": 3},
    {"prompt": "a green triangle", "seed": 77},
    {"prompt": "a square", "steps": 3},
    {"prompt": "stochastic", "scheduler": {"type": "test.noisy", "steps": 4}},
    {"prompt": "guided", "guidance": 4.5},
]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    write_model_folder(tmp_path)
    (tmp_path / "lines.jsonl").write_text("".join(json.dumps(line) + "\n" for line in LINES))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFUMATO_REGISTRY", "registry.toml")
    yield tmp_path
    sfumato.set_registry(None)


def generate(*argv: str) -> int:
    try:
        return main(["generate", "--spec", "text.json", "--no-progress", *argv])
    finally:
        sfumato.set_registry(None)


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_one_image_per_line_with_a_manifest_in_line_order(folder, capsys):
    (folder / "prompts.txt").write_text("a red circle\n\n  a blue square  \nthree triangles\n")
    assert generate("--prompts", "prompts.txt", "--out", "out", "--seed", "10") == 0, capsys.readouterr().err
    entries = manifest(folder / "out")
    assert [(e["line"], e["file"], e["seed"]) for e in entries] == [
        (1, "000001.png", 11), (3, "000003.png", 13), (4, "000004.png", 14)]  # blank line 2 skipped
    for entry in entries:
        lock = read_lock(folder / "out" / entry["file"])
        assert lock["arguments"]["seed"] == entry["seed"] and lock["arguments"]["num_images"] == 1
        assert len(entry["lock"]) == 64
    assert read_lock(folder / "out" / "000003.png")["arguments"]["prompt"] == "a blue square"
    assert "wrote 3 image(s)" in capsys.readouterr().out


def test_line_fields_override_the_options_and_reach_the_lock(folder):
    assert generate("--prompts", "lines.jsonl", "--out", "out", "--steps", "2") == 0
    locks = {e["line"]: read_lock(folder / "out" / e["file"]) for e in manifest(folder / "out")}
    assert locks[1]["arguments"]["steps"] == 2 and locks[3]["arguments"]["steps"] == 3
    assert locks[2]["arguments"]["negative_prompt"] == "green"
    assert locks[4]["arguments"]["seed"] == 77 and locks[5]["arguments"]["seed"] == 5
    assert locks[6]["spec"]["scheduler"] == {"type": "test.noisy", "steps": 4}
    assert locks[1]["spec"]["scheduler"]["type"] == "test.ddim"
    assert locks[7]["spec"]["guidance"][0]["scale"] == 4.5 and locks[1]["spec"]["guidance"][0]["scale"] == 2.0


def test_compatible_lines_share_a_forward(folder, monkeypatch):
    forwards = []
    run = SampleRunner.run

    def recorded(self, samples, callback=None):
        forwards.append([s.prompt for s in samples])
        return run(self, samples, callback)

    monkeypatch.setattr(SampleRunner, "run", recorded)
    assert generate("--prompts", "lines.jsonl", "--out", "out", "--batch-size", "2") == 0
    # lines 1, 2 and 4 share everything but prompt, negative and seed; 3 and 5 their steps
    assert forwards == [["a red circle", "a blue square"], ["a green triangle"], ["two yellow circles", "a square"],
                     ["stochastic"], ["guided"]]


def test_every_line_replays_with_from_to_the_same_bytes(folder):
    """At --batch-size 1 a line is exactly the one-image call its lock records."""
    assert generate("--prompts", "lines.jsonl", "--out", "out", "--batch-size", "1") == 0
    for entry in manifest(folder / "out"):
        replay = folder / f"replay-{entry['line']}.png"
        assert main(["generate", "--from", str(folder / "out" / entry["file"]), "--out", str(replay),
                     "--no-progress"]) == 0
        original = np.asarray(Image.open(folder / "out" / entry["file"]))
        assert np.array_equal(original, np.asarray(Image.open(replay))), entry


def test_a_line_does_not_depend_on_its_batch(folder):
    """Per-line seeds: the stochastic line and the others give the same images alone and batched."""
    assert generate("--prompts", "lines.jsonl", "--out", "one", "--batch-size", "1") == 0
    assert generate("--prompts", "lines.jsonl", "--out", "many", "--batch-size", "8") == 0
    for entry in manifest(folder / "one"):
        one = np.asarray(Image.open(folder / "one" / entry["file"]), dtype=int)
        many = np.asarray(Image.open(folder / "many" / entry["file"]), dtype=int)
        assert np.abs(one - many).max() <= 1, entry  # 8-bit rounding of float batch effects at most
    assert manifest(folder / "one") == manifest(folder / "many")


def test_a_crash_loses_only_the_batch_in_flight_and_a_rerun_completes_it(folder, monkeypatch):
    assert generate("--prompts", "lines.jsonl", "--out", "clean", "--batch-size", "2") == 0
    calls = []
    run = SampleRunner.run

    def crash_on_third(self, samples, callback=None):
        calls.append(len(samples))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies mid-run
        return run(self, samples, callback)

    monkeypatch.setattr(SampleRunner, "run", crash_on_third)
    assert generate("--prompts", "lines.jsonl", "--out", "out", "--batch-size", "2") == 130
    assert [e["line"] for e in manifest(folder / "out")] == [1, 2, 4]  # the first two batches
    monkeypatch.setattr(SampleRunner, "run", run)
    with (folder / "out" / "manifest.jsonl").open("a") as handle:
        handle.write('{"file": "000003.png", "li')  # a torn append
    assert generate("--prompts", "lines.jsonl", "--out", "out", "--batch-size", "2") == 0
    assert files(folder / "out") == files(folder / "clean")


def test_a_rerun_skips_finished_lines_and_remakes_missing_images(folder, capsys):
    assert generate("--prompts", "lines.jsonl", "--out", "out") == 0
    before = files(folder / "out")
    assert generate("--prompts", "lines.jsonl", "--out", "out") == 0
    assert "wrote 0 image(s) to out (7 already there)" in capsys.readouterr().out
    assert files(folder / "out") == before
    (folder / "out" / "000004.png").unlink()
    assert generate("--prompts", "lines.jsonl", "--out", "out") == 0
    assert "wrote 1 image(s) to out (6 already there)" in capsys.readouterr().out
    assert files(folder / "out") == before


def test_a_changed_line_is_refused_then_remade_with_overwrite(folder, capsys):
    assert generate("--prompts", "lines.jsonl", "--out", "out") == 0
    changed = [dict(line) for line in LINES]
    changed[2]["steps"] = 4
    (folder / "lines.jsonl").write_text("".join(json.dumps(line) + "\n" for line in changed))
    before = files(folder / "out")
    assert generate("--prompts", "lines.jsonl", "--out", "out") == 2
    assert "line(s) 3 were made with another lock" in capsys.readouterr().err
    assert files(folder / "out") == before
    assert generate("--prompts", "lines.jsonl", "--out", "out", "--overwrite") == 0
    after = files(folder / "out")
    assert [name for name in before if before[name] != after[name]] == ["000003.png", "manifest.jsonl"]
    assert read_lock(folder / "out" / "000003.png")["arguments"]["steps"] == 4
    assert [e["line"] for e in manifest(folder / "out")] == [1, 2, 3, 4, 5, 6, 7]


def test_the_manifest_records_the_sha256_of_each_image_lock(folder):
    assert generate("--prompts", "lines.jsonl", "--out", "out") == 0
    for entry in manifest(folder / "out"):
        assert lock_sha256(read_lock(folder / "out" / entry["file"])) == entry["lock"]
    assert len({entry["lock"] for entry in manifest(folder / "out")}) == len(LINES)


def test_the_progress_bar_counts_images_per_second(folder, capsys):
    assert main(["generate", "--spec", "text.json", "--prompts", "lines.jsonl", "--out", "out"]) == 0
    assert "img/s" in capsys.readouterr().err
