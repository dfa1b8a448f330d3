"""Runs one case in its own process and prints its results as one JSON object.

``--mode time``: for each variant, build both implementations, compare their outputs once,
count sfumato's FLOPs, then time interleaved rounds. ``--mode memory``: the peak resident memory
of one call of each (run with ``measure.MEMORY_ENV``; eager variants only). The parent
(``benchmarks.run``) starts one worker per case and mode, so every case starts from a fresh
process and one case's caches and compiled graphs cannot speed up or slow down another's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from .cases import CASES, VARIANTS
from .measure import count_flops, interleaved_medians, peak_memory_mib


def time_case(name: str, root: Path, size: str, variants: list[str], warmup: int, repeats: int) -> list[dict]:
    rows = []
    repeats = min(repeats, CASES[name].max_repeats or repeats)
    warmup = min(warmup, 1) if CASES[name].max_repeats else warmup
    for variant_name in variants:
        variant = VARIANTS[variant_name]
        started = time.perf_counter()
        pairs = CASES[name].build(root, size, variant)
        for row, pair in pairs.items():
            result = {"case": name, "row": row, "variant": variant_name, "reference": pair.reference_name,
                      "steps": pair.steps, "sfumato_dtype": variant.dtype, "reference_dtype": variant.reference_dtype,
                      "compile": variant.compile, "channels_last": variant.channels_last}
            if pair.outputs is not None:
                ours, theirs = pair.outputs()
                result["max_abs_difference"] = float((ours - theirs).abs().max())
            warmup_started = time.perf_counter()
            if variant_name == "fp32":
                result["sfumato_flops"] = count_flops(pair.sfumato) / pair.steps
                result["reference_flops"] = count_flops(pair.reference) / pair.steps
            times = interleaved_medians({"sfumato": pair.sfumato, "reference": pair.reference}, warmup, repeats)
            for impl, stats in times.items():
                result[f"{impl}_s"] = stats["median_s"] / pair.steps
                result[f"{impl}_min_s"] = stats["min_s"] / pair.steps
                result[f"{impl}_max_s"] = stats["max_s"] / pair.steps
            result["runs"] = repeats
            result["ratio"] = result["sfumato_s"] / result["reference_s"]
            result["ratio_of_minima"] = result["sfumato_min_s"] / result["reference_min_s"]
            result["setup_s"] = warmup_started - started
            rows.append(result)
    return rows


def memory_case(name: str, root: Path, size: str, variants: list[str]) -> list[dict]:
    rows = []
    for variant_name in variants:
        if VARIANTS[variant_name].compile:
            continue
        for row, pair in CASES[name].build(root, size, VARIANTS[variant_name]).items():
            pair.sfumato(), pair.reference()  # warm-up: lazy initialisation is not a call's memory
            rows.append({"case": name, "row": row, "variant": variant_name,
                         "sfumato_peak_mib": peak_memory_mib(pair.sfumato),
                         "reference_peak_mib": peak_memory_mib(pair.reference)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--mode", choices=["time", "memory"], default="time")
    parser.add_argument("--root", type=Path, required=True, help="folder of the saved reference weights")
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--variants", default=None, help="comma-separated (default: the case's)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.variants.split(",") if args.variants else list(CASES[args.case].variants)
    try:
        if args.mode == "time":
            rows = time_case(args.case, args.root, args.size, variants, args.warmup, args.repeats)
        else:
            rows = memory_case(args.case, args.root, args.size, variants)
        print(json.dumps({"rows": rows}))
    except Exception:  # reported by the parent, which goes on with the other cases
        print(json.dumps({"error": traceback.format_exc()}))
        sys.exit(1)


if __name__ == "__main__":
    main()
