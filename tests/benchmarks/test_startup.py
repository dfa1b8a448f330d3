"""The start-up row (``benchmarks.startup``): the generate path of the built-in model, in a fresh
process, imports none of the heavy packages it does not need, whatever plugins are installed; and
the row's table is written into its own section of docs/benchmarks.md; the thread and compile
tables (``benchmarks.threads``, ``benchmarks.compile_regions``) read their rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import startup
from benchmarks.report import END, START

ROOT = Path(__file__).parents[2]


def test_import_plugin_loading_and_generate_import_no_heavy_package(tmp_path):
    image = tmp_path / "image.png"
    done = subprocess.run([sys.executable, "-m", "benchmarks.startup", "--worker", "--image", str(image), "--steps", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    modules = set(result["modules"])
    assert {"torch", "sfumato", "sfumato_unet", "sfumato_clip", "PIL"} <= modules  # the listing sees real imports
    heavy = sorted(modules & set(startup.HEAVY))
    assert not heavy, f"the generate path imported {heavy}: import them inside the functions that need them " \
                      f"(first imported in: {[(p, sorted(set(m) & set(heavy))) for p, m in result['imported'].items()]})"
    assert list(result["phases_s"]) == list(startup.PHASES)
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_startup_table_goes_in_its_own_section(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nprose\n\n{START}\nthe CPU table\n{END}\n")
    phases = dict.fromkeys(startup.PHASES, 0.1)
    results = {"phases_s": phases, "phases_cpu_s": dict.fromkeys(startup.PHASES, 0.05), "imported": {p: ["torch"] if p == "import torch" else [] for p in startup.PHASES},
               "python_s": 0.02, "python_cpu_s": 0.02, "generate_s": 0.9, "generate_min_s": 0.8, "generate_cpu_s": 0.7, "heavy_imported": [], "repeats": 3,
               "load_average": [0.5, 0.5, 0.5], "threads": "OMP_NUM_THREADS=1", "command": "python -m benchmarks.startup"}
    for _ in range(2):  # rewriting replaces the section
        startup.write_block(doc, startup.render(results), startup.START, startup.END)
    text = doc.read_text()
    assert "prose" in text and "the CPU table" in text and text.count(startup.START) == 1
    assert "| sum of the phases | 0.60 | 0.30 |" in text and "| import torch | 0.10 | 0.05 | torch |" in text
    assert "Heavy packages imported: none" in text


def test_the_thread_and_compile_tables_read_their_rows():
    from benchmarks import compile_regions, threads

    thread_rows = [{"denoiser": "shapes", "load": "loaded", "threads": 2, "median_s": 0.5, "min_s": 0.25, "max_s": 1.0,
                    "load_average_before": [3.0, 2.0, 1.0]}, {"denoiser": "shapes", "load": "idle", "threads": 1,
                                                                "error": "boom"}]
    assert threads.table(thread_rows)[2:] == ["| shapes | loaded | 2 | 500.0 | 250.0 | 1000.0 | 3.00 |",
                                              "| shapes | idle | 1 | failed | | | |"]
    compile_rows = [{"denoiser": "unet-sd", "scope": "blocks", "compile_s": 30.0, "compile_cpu_s": 20.0, "step_s": 0.09,
                     "step_min_s": 0.08, "eager_step_s": 0.1, "graphs": 15, "max_abs_difference": 2e-6}]
    assert compile_regions.table(compile_rows)[2] == "| unet-sd | blocks | 30.0 | 20.0 | 90.0 | 100.0 | 0.90 | 15 | 2.0e-06 |"
