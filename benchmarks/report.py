"""The markdown report of a results JSON: the machine, the exact command, the results table and
the issue's targets, written between two markers of docs/benchmarks.md (the prose around them is
kept)."""

from __future__ import annotations

from pathlib import Path

START, END = "<!-- benchmark results: start (written by benchmarks.run) -->", "<!-- benchmark results: end -->"

#: (description, rows it reads, limit on the ratio sfumato / reference)
TARGETS = [
    ("U-Net step, eager fp32 (unet-sd)", ("unet-sd", ("fp32",)), 0.9),
    ("U-Net step, eager fp32 (unet-pixel)", ("unet-pixel", ("fp32",)), 0.9),
    ("text-to-image, eager fp32", ("text-to-image", ("fp32",)), 0.9),
    ("U-Net step, fastest sfumato options vs diffusers eager fp32 (unet-sd)",
     ("unet-sd", ("compiled", "compiled-bf16", "autocast-bf16")), 1 / 1.5),
    ("U-Net step, fastest sfumato options vs diffusers eager fp32 (unet-pixel)",
     ("unet-pixel", ("compiled", "compiled-bf16", "autocast-bf16")), 1 / 1.5),
    ("text-to-image, fastest sfumato options vs diffusers eager fp32",
     ("text-to-image", ("compiled", "compiled-bf16", "autocast-bf16")), 1 / 1.5),
]


def _ms(seconds: float | None, row: dict) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e6:.0f} us" if row["steps"] > 1 else f"{seconds * 1e3:.1f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def results_table(results: dict, peak_label: str = "of fp32 peak") -> list[str]:
    lines = [
        "| case | variant | reference | sfumato (ms) | reference (ms) | ratio | ratio of minima | max abs diff | GFLOP | "
        f"sfumato GFLOP/s | {peak_label} | peak MiB sfumato / ref |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        flops = row.get("sfumato_flops")
        gflop = f"{flops / 1e9:.2f}" if flops else "-"
        rate = f"{row['sfumato_flops_per_s'] / 1e9:.1f}" if row.get("sfumato_flops_per_s") else "-"
        fraction = f"{row['fraction_of_matmul_peak']:.1%}" if row.get("fraction_of_matmul_peak") else "-"
        diff = f"{row['max_abs_difference']:.1e}" if row.get("max_abs_difference") is not None else "-"
        lines.append(
            f"| {row['row']} | {row['variant']} | {row['reference']} ({row['reference_dtype']}) | "
            f"{_ms(row['sfumato_s'], row)} | {_ms(row['reference_s'], row)} | **{row['ratio']:.2f}** | {row['ratio_of_minima']:.2f} | {diff} | "
            f"{gflop} | {rate} | {fraction} | {_mib(row.get('sfumato_peak_mib'))} / "
            f"{_mib(row.get('reference_peak_mib'))} |"
        )
    return lines


def targets_table(results: dict) -> list[str]:
    lines = ["| target | limit (ratio) | measured | met |", "|---|---:|---:|---|"]
    for description, (case, variants), limit in TARGETS:
        ratios = [(r["ratio"], r["variant"]) for r in results["rows"] if r["row"] == case and r["variant"] in variants]
        if not ratios:
            continue
        ratio, variant = min(ratios)
        lines.append(f"| {description} | {limit:.2f} | {ratio:.2f} ({variant}) | {'yes' if ratio <= limit else 'no'} |")
    schedulers = [r for r in results["rows"] if r["case"] == "schedulers"]
    for row in schedulers:
        lines.append(f"| per-step overhead, {row['row'].removeprefix('scheduler-')} | 0.50 | {row['ratio']:.2f} | "
                     f"{'yes' if row['ratio'] <= 0.5 else 'no'} |")
    return lines


def machine_lines(results: dict) -> list[str]:
    m = results["machine"]
    peaks = ", ".join(f"{dtype} {value / 1e9:.0f} GFLOP/s" for dtype, value in m["matmul_peak_flops"].items())
    return [
        f"- CPU: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads; {', '.join(m['isa'])})",
        f"- torch {m['torch']}, diffusers {m['diffusers']}, transformers {m['transformers']}, Python {m['python']}",
        f"- matmul ceiling (best 2048x2048 GEMM): {peaks}",
        f"- load average (1, 5, 15 min) at start {m['load_average_start']}, at end {m['load_average_end']}; "
        f"the suite took {m['duration_s']:.0f} s",
        f"- median of {results['repeats']} interleaved runs after {results['warmup']} warm-up runs each",
        "",
        "```",
        results["command"],
        "```",
    ]


def render(results: dict) -> str:
    lines = [START, "", "### Machine and command", "", *machine_lines(results), "", "### Results", "",
             *results_table(results), "", "### Targets", "", *targets_table(results)]
    if results.get("errors"):
        lines += ["", "### Failed cases", "", *(f"- {name}" for name in results["errors"])]
    return "\n".join(lines + ["", END])


def write_report(results: dict, path: Path) -> Path:
    """Replace the generated CPU section of ``path`` (appending it when the file has none)."""
    return write_block(path, render(results), START, END)


def write_block(path: Path, block: str, start: str, end: str) -> Path:
    """Replace the text from ``start`` to ``end`` in ``path`` with ``block`` (appended when absent)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
    return path
