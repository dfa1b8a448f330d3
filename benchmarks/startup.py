"""A cold ``sfumato generate`` with the built-in ``shapes`` model, in phases, for docs/benchmarks.md
(run by hand):

    python -m benchmarks.startup --out benchmarks/results/startup.json --doc docs/benchmarks.md

Every measurement is a fresh Python process (the OS file cache is warm, as on a second run):

- ``python``: the interpreter starting and exiting (``python -c pass``);
- ``sfumato generate``: the command itself, wall time to exit (``python -m sfumato generate "a red
  circle" --out ... --no-progress``);
- the phases, timed inside a process that runs the same calls the command does, in its order:
  importing torch, importing sfumato (the package and its CLI), loading the plugins (the
  registry), loading the model (spec, weights, placement), sampling (the pipeline call: prompt
  encoding, the steps, decoding) and writing the PNG with its lock. Each phase also reports the
  modules it imported.

Figures are medians over ``--repeats`` processes. ``HEAVY`` lists the packages no phase may
import (transformers, diffusers, matplotlib, ...): tests/benchmarks/test_startup.py runs the
phases and fails if one appears, so the row cannot grow silently as plugins are added.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .report import write_block

START, END = "<!-- startup results: start (written by benchmarks.startup) -->", "<!-- startup results: end -->"
#: Packages the generate path must not import: none of it needs them, and each costs 0.1-2 s.
HEAVY = ("transformers", "diffusers", "matplotlib", "scipy", "sklearn", "pandas", "cv2", "open_clip",
         "datasets", "huggingface_hub", "accelerate", "ray", "k_diffusion", "torchvision", "IPython")
PHASES = ("import torch", "import sfumato", "plugin loading", "model load", "sampling", "writing")
PROMPT = "a red circle"
ROOT = Path(__file__).parent.parent


def run_phases(out: Path, steps: int | None) -> dict:
    """In this (fresh) process: the phases of ``sfumato generate``, each timed, with the modules
    each imported."""
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    imported: dict[str, list[str]] = {}

    def phase(name: str, call):
        before = set(sys.modules)
        start, cpu_start = time.perf_counter(), time.process_time()
        value = call()
        timings[name], cpu[name] = time.perf_counter() - start, time.process_time() - cpu_start
        imported[name] = sorted({m.split(".")[0] for m in set(sys.modules) - before})
        return value

    phase("import torch", lambda: __import__("torch"))
    phase("import sfumato", lambda: (__import__("sfumato"), __import__("sfumato.cli")))
    from sfumato.cli.generate_command import DEFAULT_MODEL
    from sfumato.outputs import save_image
    from sfumato.pipeline import Pipeline
    from sfumato.registry import get_registry

    registry = phase("plugin loading", get_registry)
    overrides = [f"scheduler.steps={steps}"] if steps else None
    pipe = phase("model load", lambda: Pipeline.load(registry.model(DEFAULT_MODEL).spec_path, overrides, registry))
    result = phase("sampling", lambda: pipe(PROMPT, progress=False))
    phase("writing", lambda: save_image(result.images[0], out, result.lock))
    return {"phases_s": timings, "phases_cpu_s": cpu, "imported": imported, "modules": sorted({m.split(".")[0] for m in sys.modules})}


def wall(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """``(wall seconds, CPU seconds)`` of one run of ``command`` (CPU: user + system, from the
    rusage of waited-for children: the steadier figure on a shared machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(repeats: int, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    python, generate, phases = [], [], []
    with tempfile.TemporaryDirectory(prefix="sfumato-startup-") as tmp:
        out = Path(tmp) / "image.png"
        for _ in range(repeats):
            python.append(wall([sys.executable, "-c", "pass"], env))
            generate.append(wall([sys.executable, "-m", "sfumato", "generate", PROMPT, "--out", str(out), "--overwrite",
                                  "--no-progress"], env))
            done = subprocess.run([sys.executable, "-m", "benchmarks.startup", "--worker", "--image", str(out)],
                                  cwd=ROOT, env=env, check=True, capture_output=True, text=True)
            phases.append(json.loads(done.stdout.splitlines()[-1]))
    return {
        "python_s": statistics.median(w for w, _ in python),
        "python_cpu_s": statistics.median(c for _, c in python),
        "generate_s": statistics.median(w for w, _ in generate),
        "generate_min_s": min(w for w, _ in generate),
        "generate_cpu_s": statistics.median(c for _, c in generate),
        "phases_s": {name: statistics.median(p["phases_s"][name] for p in phases) for name in PHASES},
        "phases_cpu_s": {name: statistics.median(p["phases_cpu_s"][name] for p in phases) for name in PHASES},
        "imported": phases[-1]["imported"],
        "heavy_imported": sorted(set(phases[-1]["modules"]) & set(HEAVY)),
    }


def render(results: dict) -> str:
    phases, cpu = results["phases_s"], results["phases_cpu_s"]
    lines = [START, "", f"Median of {results['repeats']} fresh processes each; load average (1 min) "
             f"{results['load_average'][0]:.2f} at the start; {results['threads']}. Wall seconds stretch with the "
             "machine's load; CPU seconds (user + system) much less.", "", "```", results["command"], "```", "",
             "| phase | wall (s) | CPU (s) | packages with modules it imports first |", "|---|---:|---:|---|",
             f"| interpreter start and exit (`python -c pass`) | {results['python_s']:.2f} | "
             f"{results['python_cpu_s']:.2f} | |"]
    for name in PHASES:
        imported = [m for m in results["imported"][name] if not m.startswith("_")]
        shown = ", ".join(imported[:12]) + (f" and {len(imported) - 12} more" if len(imported) > 12 else "")
        lines.append(f"| {name} | {phases[name]:.2f} | {cpu[name]:.2f} | {shown} |")
    lines += [f"| sum of the phases | {sum(phases.values()):.2f} | {sum(cpu.values()):.2f} | |",
              f"| **`sfumato generate`** (best wall) | **{results['generate_s']:.2f}** ({results['generate_min_s']:.2f}) | "
              f"**{results['generate_cpu_s']:.2f}** | |",
              "", f"Heavy packages imported: {', '.join(results['heavy_imported']) or 'none'} (of {', '.join(HEAVY)}).",
              "", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--image", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/startup.json"))
    parser.add_argument("--doc", type=Path, default=None, help="markdown file to (re)write the startup table in")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the processes (default: the environment's)")
    parser.add_argument("--from-json", action="store_true", help="only rewrite --doc from the results in --out")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_phases(args.image, args.steps)))
        return
    if args.from_json:
        write_block(args.doc or Path("docs/benchmarks.md"), render(json.loads(args.out.read_text())), START, END)
        return
    started, load_average = time.perf_counter(), list(os.getloadavg())
    results = measure(args.repeats, args.threads)
    results.update(command="python -m benchmarks.startup " + " ".join(argv if argv is not None else sys.argv[1:]),
                   repeats=args.repeats, load_average=load_average,
                   threads=f"OMP_NUM_THREADS={args.threads}" if args.threads else "threads as the environment says",
                   duration_s=round(time.perf_counter() - started, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.doc is not None:
        write_block(args.doc, render(results), START, END)
    print(render(results))


if __name__ == "__main__":
    main()
