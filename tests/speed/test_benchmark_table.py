"""benchmarks/speedups.py: the table reads the merged JSON as docs/benchmarks.md says."""

from __future__ import annotations

from benchmarks.speedups import END, START, table, write_doc


def figures(seconds: float, score: float, pixel: float = 0.0) -> dict:
    return {"seconds": seconds, "score": score, "images": 90, "pixel_diff": pixel, "clip_distance": pixel / 2}


RESULTS = {
    "shapes": {
        "none": {"0": figures(80.0, 0.64), "1": figures(100.0, 0.60)},
        "deepcache N=2": {"0": figures(40.0, 0.62, 0.01), "1": figures(50.0, 0.57, 0.02)},
        "later": {"1": figures(25.0, 0.50)},  # a setting measured on one seed set only
    },
    "unet-sd": {"none": {"1": {"seconds": 2.0, "images": 1, "pixel_diff": 0.0}},
                "tome 0.5": {"1": {"seconds": 1.0, "images": 1, "pixel_diff": 0.05}}},
    "machine": {"threads": 1},
}


def test_rows_give_speed_up_score_drop_and_distances():
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table(RESULTS).splitlines() if line.startswith("| ")}
    assert rows["deepcache N=2"][1:3] == ["2.00x", "0.500"]  # 180 s over 90 s; 90 s for 180 images
    assert rows["deepcache N=2"][3:5] == ["0.595 (0.620, 0.570)", "+0.025"]
    assert rows["later"][1] == "4.00x" and rows["later"][4] == "+0.100"  # against seed set 1's uncached run only
    assert rows["tome 0.5"][1:4] == ["2.00x", "1.000", "0.0500 |"]


def test_the_doc_section_is_replaced_between_its_markers(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"before\n{START}\nold\n{END}\nafter\n")
    write_doc(doc, "new table")
    assert doc.read_text() == f"before\n{START}\nnew table\n{END}\nafter\n"


def test_timing_rounds_give_the_median_of_per_round_ratios():
    timed = {**RESULTS, "timing": {"shapes": {"none": [2.0, 2.0, 2.0], "deepcache N=2": [1.0, 1.0, 4.0]}}}
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table(timed).splitlines() if line.startswith("| ")}
    assert rows["deepcache N=2"][1] == "2.00x"  # ratios 2, 2 and 0.5 (a round the machine slowed)
    assert rows["later"][1] == "4.00x"  # untimed settings keep the seed sets' ratio
