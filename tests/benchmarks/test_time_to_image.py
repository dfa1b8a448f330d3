"""The time-to-an-image benchmark (benchmarks/time_to_image.py): the ``shapes`` model written as a
diffusers folder draws in diffusers what sfumato draws, and the table picks each library's fastest
configuration within the quality bound."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import time_to_image as tti

diffusers = pytest.importorskip("diffusers")


def test_the_exported_shapes_folder_draws_in_diffusers_what_sfumato_draws(tmp_path):
    folder = tti.export_shapes(tmp_path / "shapes")
    prompts = ["a red circle", "two blue squares"]
    latents = tti.seed_latents([3, 4], (4, 16, 16))
    setting = {"library": "diffusers", "sampler": "DPMSolverMultistepScheduler", "steps": 4}
    _, theirs = tti.generate(tti.load(folder, setting, 5.0), setting, prompts, latents, 5.0, 64)
    ours_setting = {**setting, "library": "sfumato", "sampler": "dpmpp-2m"}
    images, ours = tti.generate(tti.load(folder, ours_setting, 5.0), ours_setting, prompts, latents, 5.0, 64)
    assert theirs.shape == ours.shape == (2, 64, 64, 3) and len(images) == 2
    assert theirs.std() > 0.05  # not flat: a wrong weight or a lost tokenizer would show
    # CFG 5 on both sides: sfumato's scale comes from the spec override (the folder's is 7.5)
    assert np.abs(ours - theirs).max() < 1e-4


def shapes_results(drops: dict[str, float], rounds: dict[str, list[float]]) -> dict:
    quality = {name: {str(s): {"seconds": sum(rounds[name]), "score": 0.6 - drop, "images": 90, "pixel_diff": 0.0}
                      for s in range(2)} for name, drop in drops.items()}
    return {"shapes": {"parity_max_abs": 1e-6, "quality": quality, "timing": {"batch": 16, "seconds": rounds}}}


def test_each_library_is_represented_by_its_fastest_configuration_within_the_drop():
    drops = {tti.REFERENCE: 0.0, "diffusers dpm++2m 16": 0.01, "diffusers dpm++2m 12": 0.05,
             "sfumato dpmpp-2m 16": 0.01, "sfumato dpmpp-2m 16 + deepcache N=2, start 0.5": 0.015}
    rounds = {tti.REFERENCE: [5.0, 5.0, 5.0], "diffusers dpm++2m 16": [2.0, 4.0, 2.0],
              "diffusers dpm++2m 12": [0.5, 0.5, 0.5],  # fastest, but outside the bound
              "sfumato dpmpp-2m 16": [2.0, 4.0, 2.0],
              "sfumato dpmpp-2m 16 + deepcache N=2, start 0.5": [1.0, 4.0, 0.5]}
    text = tti.table(shapes_results(drops, rounds), max_drop=0.02, tolerance=0.01)
    assert "sfumato's fastest is **sfumato dpmpp-2m 16 + deepcache N=2, start 0.5**" in text
    assert "diffusers' fastest is **diffusers dpm++2m 16**" in text
    assert "**2.00x** as fast (median of per-round ratios)" in text  # rounds 2, 1, 4: median 2 (medians' ratio: 2)
    assert "| diffusers dpm++2m 12 | 1.5 | 0.50 | 0.550 (0.550, 0.550) | +0.050 | 0.0000 |" in text


def test_no_configuration_within_the_bound_is_said_so():
    drops = {tti.REFERENCE: 0.0, "diffusers dpm++2m 16": 0.01, "sfumato dpmpp-2m 12": 0.05}
    rounds = {name: [1.0] for name in drops}
    assert "no sfumato configuration" in tti.table(shapes_results(drops, rounds), max_drop=0.02, tolerance=0.01)


def test_the_table_goes_between_the_markers(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"head\n{tti.START}\nold\n{tti.END}\ntail\n")
    tti.write_doc(doc, "new")
    assert doc.read_text() == f"head\n{tti.START}\nnew\n{tti.END}\ntail\n"
