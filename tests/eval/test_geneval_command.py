"""``sfumato eval geneval``: the generate-detect-score loop with a stand-in "model" that draws
known-correct (or known-wrong) images, and the command end to end with a tiny random pipeline."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from sfumato_eval_helpers import render_prompt

from sfumato.cli import main
from sfumato_eval.geneval import TASKS, prompt_set
from sfumato_eval.geneval_command import FAIL_COLOR, PASS_COLOR, marked_grid, run_geneval


class DrawingPipe:
    """Draws each prompt with the shapes renderer: right, or wrong on the prompts in ``wrong``."""

    def __init__(self, prompts, wrong=()):
        self.by_text = {p.prompt: p for p in prompts}
        self.wrong = set(wrong)
        self.calls = []

    def __call__(self, prompt, seed, num_images, progress):
        self.calls.append((prompt, seed, num_images))
        rng = np.random.default_rng(seed)
        images = [render_prompt(self.by_text[prompt], rng, wrong=prompt in self.wrong) for _ in range(num_images)]
        return SimpleNamespace(images=images)


def test_a_model_that_draws_every_prompt_right_scores_1_and_one_that_never_does_0():
    prompts = prompt_set()
    report, images = run_geneval(DrawingPipe(prompts), prompts, images_per_prompt=2, seed=10, progress=False)
    assert report["overall"] == 1.0 and len(images) == len(report["images"]) == 180
    assert {t: (f["prompts"], f["accuracy"]) for t, f in report["tasks"].items()} == {
        "single_object": (3, 1.0), "two_object": (6, 1.0), "counting": (9, 1.0),
        "colors": (24, 1.0), "position": (24, 1.0), "color_attr": (24, 1.0),
    }
    wrong = DrawingPipe(prompts, wrong=[p.prompt for p in prompts])
    report, _ = run_geneval(wrong, prompts, images_per_prompt=1, seed=10, progress=False)
    assert report["overall"] == 0.0
    assert all(record["reason"] for record in report["images"])


def test_each_prompt_gets_its_own_seed_and_n_images():
    prompts = prompt_set()[:5]
    pipe = DrawingPipe(prompts, wrong=[prompts[1].prompt])
    report, _ = run_geneval(pipe, prompts, images_per_prompt=3, seed=7, progress=False)
    assert pipe.calls == [(p.prompt, 7 + i, 3) for i, p in enumerate(prompts)]
    assert [r["passed"] for r in report["images"]] == [True] * 3 + [False] * 3 + [True] * 9
    assert report["tasks"]["single_object"]["accuracy"] == pytest.approx(2 / 3)
    first = report["images"][0]
    assert (first["prompt"], first["seed"], first["index"]) == ("a circle", 7, 0)
    assert first["detected"][0]["shape"] == "circle"


def test_the_grid_frames_passing_images_green_and_failing_ones_red():
    images = [Image.new("RGB", (48, 48), (235, 235, 235))] * 3
    grid = marked_grid(images, [True, False, True], columns=8)
    assert grid.size == (3 * 52, 52)  # a 2 px frame around each 48 px image; no empty columns
    assert [grid.getpixel((52 * i, 0)) for i in range(3)] == [PASS_COLOR, FAIL_COLOR, PASS_COLOR]
    assert grid.getpixel((26, 26)) == (235, 235, 235)


def test_sfumato_eval_geneval_runs_end_to_end_with_a_tiny_random_pipeline(example_spec, tmp_path, capsys):
    out, grid = tmp_path / "results.json", tmp_path / "grid.png"
    code = main(["eval", "geneval", "--spec", example_spec("tiny-text-to-image"), "--set", "scheduler.steps=2",
                 "--task", "single_object", "--task", "counting", "--images-per-prompt", "2",
                 "--out", str(out), "--grid", str(grid), "--no-progress"])
    assert code == 0
    captured = capsys.readouterr()
    assert "overall (mean of tasks)" in captured.out and "single_object" in captured.out
    assert "reliable from 48 px" in captured.err  # the tiny pipeline draws 32 px images
    report = json.loads(out.read_text())
    assert report["benchmark"] == "geneval-shapes" and report["images_per_prompt"] == 2
    assert report["overrides"] == ["scheduler.steps=2"]
    assert {t: (f["prompts"], f["images"]) for t, f in report["tasks"].items()} == {
        "single_object": (3, 6), "counting": (9, 18)}
    assert 0.0 <= report["overall"] <= 1.0 and len(report["images"]) == 24
    assert Image.open(grid).size == (8 * 36, 3 * 36)  # 24 images of 32 px + 2 px frames, 8 per row


def test_an_unknown_task_is_an_error_listing_the_tasks(example_spec, capsys):
    assert main(["eval", "geneval", "--spec", example_spec("tiny-text-to-image"), "--task", "colours"]) == 2
    err = capsys.readouterr().err
    assert "unknown task(s) colours" in err and all(task in err for task in TASKS)
