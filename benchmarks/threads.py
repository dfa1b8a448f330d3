"""How a forward's time depends on torch's CPU thread count, with the other cores idle and with
them loaded, for docs/benchmarks.md (run by hand):

    python -m benchmarks.threads --out benchmarks/results/threads.json --doc docs/benchmarks.md

For each denoiser of ``benchmarks.denoisers`` (default: the ``shapes`` U-Net and the ``unet-sd``
case), each thread count (default 1 and every core) and each load (``idle``: nothing started;
``loaded``: one busy-loop process per core but one, started before and stopped after), a fresh
process sets ``torch.set_num_threads``, runs ``--warmup`` forwards, then times ``--repeats`` and
reports the median, min and max. The machine's load average is recorded with each row: ``idle``
means that this script started nothing, not that nobody else ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import machine
from .measure import run_json_worker
from .report import write_block

START, END = "<!-- thread results: start (written by benchmarks.threads) -->", "<!-- thread results: end -->"
BUSY_LOOP = "while True: pass"


def time_forwards(denoiser: str, threads: int, warmup: int, repeats: int) -> dict:
    """In this process: ``threads`` torch threads, then the forward times of ``denoiser``."""
    import torch

    from .denoisers import build

    torch.set_num_threads(threads)
    model, forward = build(denoiser)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            forward(model)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": repeats}


def run_worker(denoiser: str, threads: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "benchmarks.threads", "--worker", denoiser, "--threads", str(threads),
               "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return run_json_worker(command, env)


def measure(args: argparse.Namespace) -> list[dict]:
    cores = os.cpu_count() or 1
    thread_counts = [int(n) for n in args.threads.split(",")] if args.threads else sorted({1, cores})
    rows = []
    for load in args.loads.split(","):
        busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(cores - 1)] if load == "loaded" else []
        try:
            time.sleep(1.0 if busy else 0.0)
            for denoiser in args.denoisers.split(","):
                for threads in thread_counts:
                    load_before = machine.load_average()
                    result = run_worker(denoiser, threads, args)
                    rows.append({"denoiser": denoiser, "threads": threads, "load": load, "busy_processes": len(busy),
                                 "load_average_before": load_before, **result})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            for process in busy:
                process.kill()
                process.wait()
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| denoiser | load | threads | median (ms) | min (ms) | max (ms) | load average (1 min) before |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['denoiser']} | {row['load']} | {row['threads']} | failed | | | |")
            continue
        lines.append(f"| {row['denoiser']} | {row['load']} | {row['threads']} | {row['median_s'] * 1e3:.1f} | "
                     f"{row['min_s'] * 1e3:.1f} | {row['max_s'] * 1e3:.1f} | {row['load_average_before'][0]:.2f} |")
    return lines


def render(results: dict) -> str:
    m = results["machine"]
    return "\n".join([
        START, "", f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}; median of {results['repeats']} forwards after "
        f"{results['warmup']} warm-up, each setting in a fresh process; the suite took {results['duration_s']:.0f} s.",
        "", "```", results["command"], "```", "", *table(results["rows"]), "", END])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/threads.json"))
    parser.add_argument("--doc", type=Path, default=None, help="markdown file to (re)write the thread table in")
    parser.add_argument("--denoisers", default="shapes,unet-sd")
    parser.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1 and all cores)")
    parser.add_argument("--loads", default="idle,loaded")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--from-json", action="store_true", help="only rewrite --doc from the results in --out")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(time_forwards(args.worker, int(args.threads), args.warmup, args.repeats)))
        return
    if args.from_json:
        write_block(args.doc or Path("docs/benchmarks.md"), render(json.loads(args.out.read_text())), START, END)
        return
    started = time.perf_counter()
    rows = measure(args)
    info = machine.describe()
    results = {"command": "python -m benchmarks.threads " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": {"cpu": info["cpu"], "cores": info["cores"], "torch": info["torch"]},
               "warmup": args.warmup, "repeats": args.repeats, "duration_s": round(time.perf_counter() - started, 1),
               "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.doc is not None:
        write_block(args.doc, render(results), START, END)
    print(f"wrote {args.out} in {results['duration_s']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
