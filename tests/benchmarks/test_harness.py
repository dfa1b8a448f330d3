"""The benchmark harness runs on tiny models and writes valid results (it never asserts timings)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")

from benchmarks import run  # noqa: E402
from benchmarks.cases import SCHEDULER_PAIRS  # noqa: E402
from benchmarks.measure import count_flops, interleaved_medians, peak_memory_mib  # noqa: E402
from benchmarks.report import END, START, write_report  # noqa: E402
from benchmarks.worker import time_case  # noqa: E402


def test_a_case_loads_the_reference_weights_into_sfumato(tmp_path):
    """Same weights through the converters: the outputs agree, and both count the same FLOPs."""
    (row,) = time_case("unet-sd", tmp_path, "tiny", ["fp32"], warmup=0, repeats=1)
    assert row["max_abs_difference"] < 1e-5
    assert row["sfumato_flops"] == row["reference_flops"] > 0
    assert row["ratio"] == pytest.approx(row["sfumato_s"] / row["reference_s"])


def test_interleaved_medians_time_every_call():
    calls = []
    times = interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert times["a"]["runs"] == 3 and times["a"]["min_s"] <= times["a"]["median_s"] <= times["a"]["max_s"]


def test_flops_and_peak_memory_of_a_matmul():
    a = torch.randn(64, 32)
    assert count_flops(lambda: a @ a.T) == 2 * 64 * 32 * 64
    peak = peak_memory_mib(lambda: torch.ones(16, 1024, 1024).neg_())  # 64 MiB
    assert peak is None or 60 < peak < 80


@pytest.mark.slow  # the whole suite end to end; the tests above cover its parts
def test_the_suite_writes_json_and_the_table(tmp_path):
    out, doc = tmp_path / "results.json", tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nProse that the report keeps.\n")
    with pytest.raises(SystemExit) as exit_code:
        run.main(["--size", "tiny", "--cases", "schedulers", "--repeats", "1", "--warmup", "0", "--no-memory",
                  "--out", str(out), "--doc", str(doc)])
    assert exit_code.value.code == 0
    results = json.loads(out.read_text())
    assert {r["row"] for r in results["rows"]} == {f"scheduler-{k}" for k in SCHEDULER_PAIRS}
    assert all(r["sfumato_s"] > 0 and r["reference_s"] > 0 for r in results["rows"])
    assert results["machine"]["matmul_peak_flops"]["float32"] > 0 and results["command"].startswith("python -m")
    text = doc.read_text()
    assert "Prose that the report keeps." in text and text.count(START) == 1 and END in text
    assert "| scheduler-ddim | fp32 | diffusers DDIMScheduler" in text
    write_report(results, doc)  # regenerating replaces the section instead of appending a second one
    assert doc.read_text().count(START) == 1
