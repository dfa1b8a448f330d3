"""Run the whole CPU suite: one worker process per case for timing and one for memory, then write
the JSON results and the markdown table.

    python -m benchmarks.run --out benchmarks/results/cpu.json --doc docs/benchmarks.md

``--size tiny --cases unet-sd`` runs the same code on tiny models in seconds (what the harness's
tests do). See docs/benchmarks.md for what each case measures.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import machine
from .cases import CASES
from .measure import MEMORY_ENV
from .report import write_report


def run_worker(case: str, mode: str, args: argparse.Namespace, root: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.worker", case, "--mode", mode, "--root", str(root),
               "--size", args.size, "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    if args.variants:
        command += ["--variants", args.variants]
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = {**os.environ, **(MEMORY_ENV if mode == "memory" else {})}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"worker exited with {done.returncode}: {done.stderr[-2000:]}"}
    return json.loads(lines[-1])


def write_json(path: Path, results: dict) -> None:
    """Write ``results``; the suite rewrites its file after every case, so a stopped run keeps
    what it measured (marked ``partial``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def merge(timed: list[dict], memory: list[dict]) -> list[dict]:
    """Timing rows with the peak memory of the same case, row and variant added."""
    peaks = {(m["case"], m["row"], m["variant"]): m for m in memory}
    for row in timed:
        peak = peaks.get((row["case"], row["row"], row["variant"]), {})
        row["sfumato_peak_mib"] = peak.get("sfumato_peak_mib")
        row["reference_peak_mib"] = peak.get("reference_peak_mib")
    return timed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu.json"))
    parser.add_argument("--doc", type=Path, default=None, help="markdown file to (re)write with the table")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--variants", default=None, help="comma-separated; default: each case's own")
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default, one per core). One by default: on a shared "
                        "machine, a multi-threaded op waits at every barrier for its slowest thread, and a "
                        "descheduled thread turns milliseconds into tens of milliseconds")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory workers")
    parser.add_argument("--weights", type=Path, default=None, help="folder for the saved reference weights")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine.describe()
    info["matmul_peak_flops"] = {"float32": machine.matmul_peak(torch.float32)}
    if info["bf16"]:
        info["matmul_peak_flops"]["bfloat16"] = machine.matmul_peak(torch.bfloat16)
    rows, memory, errors = [], [], {}
    with tempfile.TemporaryDirectory(prefix="sfumato-bench-") as tmp:
        root = args.weights or Path(tmp)
        for case in args.cases.split(","):
            print(f"[{time.perf_counter() - started:6.0f}s] {case}", file=sys.stderr, flush=True)
            result = run_worker(case, "time", args, root)
            rows += result.get("rows", [])
            if "error" in result:
                errors[f"{case} (time)"] = result["error"]
                continue
            if not args.no_memory:
                result = run_worker(case, "memory", args, root)
                memory += result.get("rows", [])
                if "error" in result:
                    errors[f"{case} (memory)"] = result["error"]
            write_json(args.out, {"partial": True, "machine": info, "rows": merge(rows, memory), "errors": errors})
    info["load_average_end"] = machine.load_average()
    info["duration_s"] = round(time.perf_counter() - started, 1)
    for row in rows:
        if "sfumato_flops" in row:
            row["sfumato_flops_per_s"] = row["sfumato_flops"] / row["sfumato_s"]
            row["fraction_of_matmul_peak"] = row["sfumato_flops_per_s"] / info["matmul_peak_flops"]["float32"]
    command = "python -m benchmarks.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    results = {"command": command, "machine": info, "size": args.size, "warmup": args.warmup,
               "repeats": args.repeats, "rows": merge(rows, memory), "errors": errors}
    write_json(args.out, results)
    if args.doc is not None:
        write_report(results, args.doc)
    for name, error in errors.items():
        print(f"{name} failed:\n{error}", file=sys.stderr)
    print(f"wrote {args.out} in {info['duration_s']} s", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
