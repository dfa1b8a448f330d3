"""Compile time and step time of ``[runtime] compile``, the whole denoiser against its repeated
blocks (regional compilation), for docs/benchmarks.md (run by hand):

    python -m benchmarks.compile_regions --out benchmarks/results/compile.json --doc docs/benchmarks.md

For each denoiser of ``benchmarks.denoisers`` and each scope (``denoiser``, ``blocks``; ``eager``
as a control), a fresh process (an empty Inductor cache of its own, one compile thread) builds the
model, keeps an eager copy, applies ``sfumato.runtime.compile_denoiser`` and times the first
forward: the compile time is its wall and CPU seconds (the C++ compiler's processes included)
less an eager step; on a shared machine the CPU seconds are the steadier figure. Then
``--repeats`` rounds of one compiled and one eager forward give both step times (medians; both
see the same load), and the row reports the number of graphs dynamo compiled and the largest
difference from the eager output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .measure import run_json_worker
from .report import write_block

START, END = "<!-- compile results: start (written by benchmarks.compile_regions) -->", "<!-- compile results: end -->"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children (Inductor runs the
    C++ compiler as child processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_scope(denoiser: str, scope: str, repeats: int, threads: int) -> dict:
    """In this process: the compile time of ``denoiser`` at ``scope`` (wall and CPU seconds of the
    first call, less an eager call), then its step time and an eager copy's, timed alternately."""
    import copy

    import torch
    from torch._dynamo.utils import counters

    from sfumato.runtime import compile_denoiser

    from .denoisers import build

    torch.set_num_threads(threads)
    model, forward = build(denoiser)
    eager_model = copy.deepcopy(model)
    with torch.inference_mode():
        eager = forward(eager_model)
        if scope != "eager":
            compile_denoiser(model, scope)
        wall_start, cpu_start = time.perf_counter(), cpu_seconds()
        first = forward(model)
        first_s, first_cpu_s = time.perf_counter() - wall_start, cpu_seconds() - cpu_start
        times: dict[str, list[float]] = {"step": [], "eager": [], "eager_cpu": []}
        for _ in range(repeats):
            for name, module in (("step", model), ("eager", eager_model)):
                start, cpu_start = time.perf_counter(), time.process_time()
                forward(module)
                times[name].append(time.perf_counter() - start)
            times["eager_cpu"].append(time.process_time() - cpu_start)
    eager_s = statistics.median(times["eager"])
    return {"compile_s": first_s - eager_s, "compile_cpu_s": first_cpu_s - statistics.median(times["eager_cpu"]),
            "step_s": statistics.median(times["step"]), "step_min_s": min(times["step"]), "eager_step_s": eager_s,
            "graphs": counters["stats"]["unique_graphs"], "max_abs_difference": float((first - eager).abs().max())}


def run_worker(denoiser: str, scope: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "benchmarks.compile_regions", "--worker", denoiser, "--scope", scope,
               "--repeats", str(args.repeats), "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory(prefix="sfumato-inductor-") as cache:
        # one compile thread: the compilation's CPU time is this process's, and two cores shared
        # with other work gain nothing from a pool of compile workers
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TORCHINDUCTOR_COMPILE_THREADS": "1"}
        return run_json_worker(command, env)


def table(rows: list[dict]) -> list[str]:
    lines = ["| denoiser | compile | compile wall (s) | compile CPU (s) | step (ms) | eager step, same rounds (ms) | "
             "step / eager | graphs | max abs diff vs eager |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['denoiser']} | {row['scope']} | failed | | | | | | |")
            continue
        compile_wall, compile_cpu = ("-", "-") if row["scope"] == "eager" else \
            (f"{row['compile_s']:.1f}", f"{row['compile_cpu_s']:.1f}")
        lines.append(f"| {row['denoiser']} | {row['scope']} | {compile_wall} | {compile_cpu} | {row['step_s'] * 1e3:.1f} | "
                     f"{row['eager_step_s'] * 1e3:.1f} | {row['step_s'] / row['eager_step_s']:.2f} | {row['graphs']} | "
                     f"{row['max_abs_difference']:.1e} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--scope", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compile.json"))
    parser.add_argument("--doc", type=Path, default=None, help="markdown file to (re)write the compile table in")
    parser.add_argument("--denoisers", default="dit-s,unet-sd")
    parser.add_argument("--scopes", default="blocks,denoiser")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--from-json", action="store_true", help="only rewrite --doc from the results in --out")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(time_scope(args.worker, args.scope, args.repeats, args.threads)))
        return
    if args.from_json:
        write_block(args.doc or Path("docs/benchmarks.md"), render(json.loads(args.out.read_text())), START, END)
        return
    started = time.perf_counter()
    command = "python -m benchmarks.compile_regions " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for denoiser in args.denoisers.split(","):
        for scope in args.scopes.split(","):
            rows.append({"denoiser": denoiser, "scope": scope, "load_average_before": list(os.getloadavg()),
                         **run_worker(denoiser, scope, args)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            results = {"command": command, "threads": args.threads, "repeats": args.repeats, "partial": True,
                       "duration_s": round(time.perf_counter() - started, 1), "rows": rows}
            args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # kept if stopped
    results.pop("partial")
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.doc is not None:
        write_block(args.doc, render(results), START, END)
    print(f"wrote {args.out} in {results['duration_s']} s", file=sys.stderr)


def render(results: dict) -> str:
    loads = [row["load_average_before"][0] for row in results["rows"]]
    return "\n".join([
        START, "", f"{results['threads']} thread(s), float32, batch 2; step times the medians of {results['repeats']} "
        f"alternating compiled and eager forwards after the compiling one; each row a fresh process with an empty "
        f"Inductor cache and one compile thread; load average (1 min) {min(loads):.1f} to {max(loads):.1f} before "
        f"the rows; the suite took {results['duration_s']:.0f} s.", "", "```", results["command"], "```", "",
        *table(results["rows"]), "", END])


if __name__ == "__main__":
    main()
