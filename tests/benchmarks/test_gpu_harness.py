"""The GPU suite's harness (``benchmarks.gpu``) runs on the CPU with the tiny SD topology: every
row is measured, both implementations agree on the same weights, and the GPU section of the
report is written without touching the CPU section."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("diffusers")

from benchmarks import gpu  # noqa: E402
from benchmarks.report import END, START  # noqa: E402


@pytest.mark.slow  # the whole GPU suite end to end; the deadline test below covers the planning
def test_the_gpu_suite_runs_on_the_cpu_at_tiny_size(tmp_path):
    out, doc = tmp_path / "gpu.json", tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\n{START}\nthe CPU table\n{END}\n")
    with pytest.raises(SystemExit) as exit_code:
        gpu.main(["--device", "cpu", "--size", "tiny", "--variants", "fp32", "--warmup", "0", "--repeats", "1",
                  "--steps", "2", "--out", str(out), "--doc", str(doc)])
    assert exit_code.value.code == 0
    results = json.loads(out.read_text())
    rows = {r["row"]: r for r in results["rows"]}
    assert set(rows) == {"unet-sd15", "vae-decode-sd15", "text-to-image-sd15"}
    for row in rows.values():
        assert row["finite"] and row["sfumato_s"] > 0 and row["reference_s"] > 0
        assert row["max_abs_difference"] < 1e-4, row  # same weights through sfumato's converters
    assert rows["unet-sd15"]["sfumato_flops"] == pytest.approx(rows["unet-sd15"]["reference_flops"], rel=0.01)
    text = doc.read_text()
    assert "the CPU table" in text and text.count(gpu.START) == 1 and gpu.END in text
    assert "| unet-sd15 | fp32 | diffusers UNet2DConditionModel (float32)" in text


def test_a_deadline_skips_the_variants_it_leaves_no_time_for(tmp_path):
    out = tmp_path / "gpu.json"
    with pytest.raises(SystemExit) as exit_code:
        gpu.main(["--device", "cpu", "--size", "tiny", "--variants", "fp32", "--deadline", "1", "--out", str(out)])
    assert exit_code.value.code == 1
    results = json.loads(out.read_text())
    assert results["rows"] == [] and "deadline" in results["errors"]["fp32"]
