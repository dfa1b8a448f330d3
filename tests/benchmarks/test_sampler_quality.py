"""The sampler quality table's script (benchmarks/sampler_quality.py): its prompt set, its n/a
rule, its distance, its table, and a tiny end-to-end run that resumes."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from benchmarks import sampler_quality as quality
from sfumato_eval.geneval import TASKS


def test_the_prompt_set_has_as_many_items_of_every_task_each_with_its_own_seed():
    items = quality.prompt_items(6)
    assert len(items) == 36 and [i["seed"] for i in items] == list(range(36))
    assert Counter(i["prompt"].task for i in items) == {task: 6 for task in TASKS}
    single = [i["prompt"].prompt for i in items if i["prompt"].task == "single_object"]
    assert len(set(single)) == 3  # the task has 3 prompts: each drawn twice, with other seeds
    counting = [i["prompt"].prompt for i in items if i["prompt"].task == "counting"]
    assert len(set(counting)) == 6  # 6 of the 9, spread through the list
    assert counting[0] != counting[1] and "two" in counting[0]


def test_samplers_without_sigma_schedules_are_not_applicable_with_one_and_the_rest_are():
    for sampler in ("ddim", "ddpm", "pndm", "lcm", "tcd"):
        assert "sigmas" in quality.not_applicable(sampler, "karras")
        assert quality.not_applicable(sampler, "default") is None
    assert quality.not_applicable("euler", "beta") is None
    assert quality.scheduler_overrides("dpmpp-2m", "karras") == {"scheduler.type": "dpmpp-2m",
                                                                 "scheduler.sigmas": "karras"}
    assert quality.scheduler_overrides("euler", "default") == {"scheduler.type": "euler"}


def test_distance_is_the_mean_absolute_difference_of_8_bit_pixels():
    black = Image.new("RGB", (4, 4), (0, 0, 0))
    half = Image.new("RGB", (4, 4), (0, 30, 90))
    reference = quality.pixels([black, black])
    assert quality.distance([half, black], reference) == pytest.approx((30 + 90) / 3 / 2)


def test_the_table_marks_stochastic_samplers_and_explains_n_a():
    results = {"settings": {"reference": "dpmpp-2m", "reference_steps": 200},
               "rows": {"ddim|default|8": {"geneval": 0.5, "distance": 3.25, "stochastic": False},
                        "ddim|karras|8": {"na": "no sigmas"},
                        "euler-ancestral|default|8": {"geneval": 0.25, "distance": 20.0, "stochastic": True},
                        "euler-ancestral|karras|8": {"geneval": 0.75, "distance": 19.0, "stochastic": True},
                        "heun|default|200": {"geneval": 0.5, "distance": 0.5, "stochastic": False}}}
    table = quality.markdown(results, ["ddim", "euler-ancestral"], ["default", "karras"], [8])
    assert "| `ddim` | 0.50 | n/a | 0.50 |" in table and "| `ddim` | 3.2 | n/a | 3.2 |" in table
    assert "| `euler-ancestral` * | 0.25 | 0.75 | 0.50 |" in table
    assert "n/a (`ddim`): no sigmas." in table
    assert "`heun` at 200 steps is 0.50 from it" in table


def test_the_table_goes_between_the_markers(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\nbefore\n{quality.START}\nold\n{quality.END}\nafter\n")
    quality.write_doc(doc, "new table\n")
    assert doc.read_text() == f"# Title\n\nbefore\n{quality.START}\nnew table\n{quality.END}\nafter\n"


@pytest.mark.slow
def test_a_tiny_run_scores_resumes_and_draws_its_grid(tmp_path):
    out, grid = tmp_path / "quality.json", tmp_path / "grid.png"
    arguments = ["--out", str(out), "--cache", str(tmp_path / "cache"), "--samplers", "ddim,euler",
                 "--schedules", "default,karras", "--steps", "2", "--per-task", "1", "--reference-steps", "6",
                 "--check", "euler:6"]
    assert quality.main(arguments) == 0
    results = json.loads(out.read_text())
    rows = results["rows"]
    assert 0 <= results["reference"]["geneval"] <= 1 and len(results["reference"]["passed"]) == 6
    assert set(rows) == {"ddim|default|2", "ddim|karras|2", "euler|default|2", "euler|karras|2", "euler|default|6"}
    assert "na" in rows["ddim|karras|2"]
    for key in ("ddim|default|2", "euler|karras|2"):
        assert 0 <= rows[key]["geneval"] <= 1 and len(rows[key]["passed"]) == 6
        assert rows[key]["distance"] > 1  # two steps are far from the reference
    rows["euler|default|2"]["distance"] = -1.0  # a rerun keeps what the file holds
    out.write_text(json.dumps({**json.loads(out.read_text()), "rows": rows}))
    assert quality.main([*arguments, "--grid", str(grid), "--grid-item", "5"]) == 0
    assert json.loads(out.read_text())["rows"]["euler|default|2"]["distance"] == -1.0
    assert Image.open(grid).size == (130 + 2 * 128, 30 + 2 * 128)  # 2 samplers x (2 steps, reference)
    assert np.asarray(Image.open(grid)).std() > 10
