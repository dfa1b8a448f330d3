"""The GPU suite: the Stable Diffusion 1.5 architecture (random weights) at 512x512, sfumato against
diffusers on the same saved weights, in float16 and bfloat16, eager and compiled.

    python -m benchmarks.gpu --out benchmarks/results/gpu.json --doc docs/benchmarks.md

Rows: the U-Net forward (batch 2, the classifier-free guidance batch, 64x64 latents, 77 tokens),
the VAE decode of one 64x64 latent to 512x512, and the whole text-to-image call (prompt and empty
negative prompt encoded, 20 DDIM steps with guidance 7.5, decode, PIL image). The compiled
variants compile both U-Nets the same way (``torch.compile``, default mode, channels_last):
sfumato's ``[runtime] compile`` and ``torch.compile(pipe.unet)`` for diffusers. Each variant runs in
its own worker process (compiled graphs and allocator state stay apart), and the JSON is rewritten
after each, so a run stopped at its deadline keeps what it measured. The machine's ceilings are
measured in the same run: the dense matmul rate in each dtype and the device-to-device copy
bandwidth. ``--device cpu --size tiny`` runs the same code in about 40 s on two cores (the harness's own test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import references
from .measure import count_flops, interleaved_medians
from .report import results_table, write_block

START, END = "<!-- gpu benchmark results: start (written by benchmarks.gpu) -->", "<!-- gpu benchmark results: end -->"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROMPT = "a red circle above a blue square"


@dataclass(frozen=True)
class GpuVariant:
    name: str
    dtype: str
    compile: bool = False


VARIANTS = {v.name: v for v in (
    GpuVariant("fp16", "float16"), GpuVariant("bf16", "bfloat16"),
    GpuVariant("compiled-fp16", "float16", True), GpuVariant("compiled-bf16", "bfloat16", True),
    GpuVariant("fp32", "float32"),  # for --device cpu checks of the harness
)}
DEFAULT_VARIANTS = "fp16,bf16,compiled-fp16,compiled-bf16"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(call: Callable[[], Any], device: torch.device) -> float | None:
    """Device memory one call allocates above what was allocated before it, at its peak."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    call()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def grad_off(call: Callable[[], Any]) -> Callable[[], Any]:
    """Under ``torch.no_grad``, as both pipelines run their models (a compiled model called in
    another grad mode would compile a second graph)."""
    def run():
        with torch.no_grad():
            return call()
    return run


def build(folder: Path, variant: GpuVariant, device: torch.device):
    """Both pipelines from the same folder, placed and (for compiled variants) compiled alike."""
    import diffusers

    import sfumato

    dtype = DTYPES[variant.dtype]
    ours = sfumato.load_pipeline(folder, {"runtime.device": str(device), "runtime.dtype": variant.dtype,
                                          "runtime.compile": variant.compile, "runtime.channels_last": variant.compile})
    theirs = diffusers.StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False).to(device)
    theirs.scheduler = diffusers.DDIMScheduler.from_config(theirs.scheduler.config)
    theirs.set_progress_bar_config(disable=True)
    if variant.compile:
        theirs.unet.to(memory_format=torch.channels_last)
        theirs.unet = torch.compile(theirs.unet)
    return ours, theirs


def measure_row(row: dict, mine: Callable[[], Any], other: Callable[[], Any], whole_call: bool,
                t2i_outputs: Callable[[], tuple[torch.Tensor, torch.Tensor]], variant: GpuVariant,
                device: torch.device, warmup: int, repeats: int) -> None:
    """Fill ``row``: first-call time, output difference, FLOPs (eager), timings and peak memory."""
    first = time.perf_counter()
    mine(), other()  # the compiled variants compile here
    synchronize(device)
    row["first_call_s"] = time.perf_counter() - first
    a, b = t2i_outputs() if whole_call else (mine().float(), other().float())
    row["max_abs_difference"] = float((a.cpu() - b.cpu()).abs().max())
    row["finite"] = bool(torch.isfinite(a).all() and torch.isfinite(b).all())
    if not variant.compile and not whole_call:
        row["sfumato_flops"] = count_flops(mine)
        row["reference_flops"] = count_flops(other)
    rounds = max(1, repeats // 4) if whole_call else repeats
    times = interleaved_medians({"sfumato": mine, "reference": other}, min(warmup, 1) if whole_call else warmup,
                                rounds, lambda: synchronize(device))
    for impl, stats in times.items():
        row[f"{impl}_s"], row[f"{impl}_min_s"], row[f"{impl}_max_s"] = stats["median_s"], stats["min_s"], stats["max_s"]
    row["runs"] = rounds
    row["ratio"] = row["sfumato_s"] / row["reference_s"]
    row["ratio_of_minima"] = row["sfumato_min_s"] / row["reference_min_s"]
    row["sfumato_peak_mib"] = peak_mib(mine, device)
    row["reference_peak_mib"] = peak_mib(other, device)


def rows_for(folder: Path, size: str, variant: GpuVariant, device: torch.device, warmup: int, repeats: int,
             steps: int, errors: list[str]) -> list[dict]:
    import sfumato

    started = time.perf_counter()
    ours, theirs = build(folder, variant, device)
    dtype = DTYPES[variant.dtype]
    config = references.SD15[size]
    side = config["unet"]["sample_size"]
    downscale = 2 ** (len(config["vae"]["block_out_channels"]) - 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, side, side, generator=g).to(device, dtype)
    tokens = torch.randn(2, 77, config["unet"]["cross_attention_dim"], generator=g).to(device, dtype)
    z = torch.randn(1, 4, side, side, generator=g).to(device, dtype)
    latents = torch.randn(1, 4, side, side, generator=g)
    t_ours = torch.full((2,), 999.0, device=device)  # what sfumato's sampling loop passes
    t_theirs = torch.tensor(999, device=device)  # what StableDiffusionPipeline passes
    # What sfumato's sampling loop gives its denoiser (the mask is not used by SD-style U-Nets).
    cond = sfumato.Conditioning(tokens=tokens, pooled=torch.randn(2, config["text"]["hidden_size"], generator=g).to(
        device, dtype), mask=torch.ones(2, 77, dtype=torch.bool, device=device))

    def t2i_ours():
        return ours(PROMPT, negative_prompt="", latents=latents, steps=steps, height=side * downscale,
                    width=side * downscale, progress=False)

    def t2i_theirs(output_type: str = "pil"):
        return theirs(PROMPT, negative_prompt="", latents=latents.to(device, dtype), num_inference_steps=steps,
                      guidance_scale=7.5, height=side * downscale, width=side * downscale, output_type=output_type)

    def t2i_outputs():
        mine = (t2i_ours().decoded.float() / 2 + 0.5).clamp(0, 1).cpu()
        other = torch.from_numpy(np.asarray(t2i_theirs("np").images)).permute(0, 3, 1, 2).float()
        return mine, other

    cases = {
        "unet-sd15": (grad_off(lambda: ours.denoiser(x, t_ours, cond)),
                      grad_off(lambda: theirs.unet(x, t_theirs, encoder_hidden_states=tokens).sample),
                      "diffusers UNet2DConditionModel", 1),
        "vae-decode-sd15": (grad_off(lambda: ours.autoencoder.decode_unscaled(z)),
                            grad_off(lambda: theirs.vae.decode(z).sample), "diffusers AutoencoderKL.decode", 1),
        "text-to-image-sd15": (t2i_ours, t2i_theirs, "diffusers StableDiffusionPipeline", 1),
    }
    rows = []
    for name, (mine, other, reference, per) in cases.items():
        if variant.compile and name == "vae-decode-sd15":
            continue  # only the denoiser is compiled: the eager rows are the same
        row: dict[str, Any] = {"case": name, "row": name, "variant": variant.name, "reference": reference, "steps": per,
                               "sfumato_dtype": variant.dtype, "reference_dtype": variant.dtype,
                               "compile": variant.compile}
        try:
            measure_row(row, mine, other, name == "text-to-image-sd15", t2i_outputs, variant, device, warmup, repeats)
        except Exception:  # one row's failure (an overflow, say) is reported and the others still run
            errors.append(f"{name} {variant.name}: {traceback.format_exc()}")
            continue
        rows.append(row)
    for row in rows:
        row["setup_s"] = time.perf_counter() - started
    return rows


# -- the machine ---------------------------------------------------------------------------------

def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 8192, repeats: int = 10) -> float:
    """Dense matmul ceiling in FLOP/s: the best of ``repeats`` products of random ``size``-square
    matrices (``2 size^3`` FLOPs each) after three warm-ups."""
    if device.type != "cuda":
        size = min(size, 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def copy_bandwidth(device: torch.device, gib: float = 2.0, repeats: int = 10) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read and written."""
    if device.type != "cuda":
        gib = 0.125
    source = torch.randn(int(gib * 2**30 / 4), device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * 4 / best


def describe(device: torch.device) -> dict:
    import diffusers
    import transformers

    info: dict[str, Any] = {"device": str(device), "python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
                            "transformers": transformers.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1))
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    else:
        info["gpu"] = "none (cpu run)"
    dtypes = ("float16", "bfloat16") if device.type == "cuda" else ("float32",)
    info["matmul_peak_flops"] = {name: matmul_peak(device, DTYPES[name]) for name in dtypes}
    info["copy_bytes_per_s"] = copy_bandwidth(device)
    return info


def add_rates(results: dict) -> dict:
    """Achieved FLOP/s and its fraction of the same-dtype matmul peak, per row. A compiled row
    does the eager row's FLOPs (counted once, in eager mode, by ``torch.utils.flop_counter``)."""
    counted = {(r["row"], r["sfumato_dtype"]): r["sfumato_flops"] for r in results["rows"] if r.get("sfumato_flops")}
    for row in results["rows"]:
        flops = row.get("sfumato_flops") or counted.get((row["row"], row["sfumato_dtype"]))
        if flops:
            row["sfumato_flops"] = flops
            row["sfumato_flops_per_s"] = flops / row["sfumato_s"]
            peak = results["machine"]["matmul_peak_flops"].get(row["sfumato_dtype"])
            row["fraction_of_matmul_peak"] = row["sfumato_flops_per_s"] / peak if peak else None
    return results


# -- the report ----------------------------------------------------------------------------------

def render(results: dict) -> str:
    m = results["machine"]
    peaks = ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s" for k, v in m["matmul_peak_flops"].items())
    lines = [
        START, "", "### GPU machine and command", "",
        f"- GPU: {m['gpu']}" + (f" (compute capability {m['capability']}, {m['multiprocessors']} SMs, "
                                f"{m['memory_gib']} GiB, driver {m.get('driver', '?')})" if "capability" in m else ""),
        f"- torch {m['torch']} (CUDA {m['cuda']}), diffusers {m['diffusers']}, transformers {m['transformers']}, "
        f"Python {m['python']}",
        f"- ceilings measured in the same run: matmul {peaks} (best 8192-square GEMM); "
        f"device-to-device copy {m['copy_bytes_per_s'] / 1e12:.2f} TB/s (read + write)",
        f"- median of {results['repeats']} interleaved runs after {results['warmup']} warm-up runs each "
        f"(text-to-image: {max(1, results['repeats'] // 4)} runs after one); the suite took {results['duration_s']:.0f} s",
        "", "```", results["command"], "```", "", "### GPU results", "",
        *results_table(results, peak_label="of matmul peak"), "",
        "First calls (the compiled variants compile in them), seconds: " + ", ".join(
            f"{r['row']} {r['variant']} {r['first_call_s']:.1f}" for r in results["rows"]) + ".",
    ]
    if results.get("errors"):
        lines += ["", "Failed or skipped variants:", "", *(f"- {k}: {v.strip().splitlines()[-1][:200]}"
                                                            for k, v in results["errors"].items())]
    return "\n".join(lines + ["", END])


# -- parent and workers --------------------------------------------------------------------------

def run_worker(variant: str, args: argparse.Namespace, root: Path, timeout: float) -> dict:
    command = [sys.executable, "-m", "benchmarks.gpu", "--worker", variant, "--root", str(root), "--size", args.size,
               "--device", args.device, "--warmup", str(args.warmup), "--repeats", str(args.repeats),
               "--steps", str(args.steps)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=Path(__file__).parent.parent)
    except subprocess.TimeoutExpired as stopped:
        return {"error": f"stopped after {timeout:.0f} s (the run's deadline)\n{(stopped.stderr or '')[-1000:]}"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"worker exited with {done.returncode}: {done.stderr[-3000:]}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.json"))
    parser.add_argument("--doc", type=Path, default=None, help="markdown file whose GPU section to (re)write")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--size", choices=sorted(references.SD15), default="sd15")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20, help="text-to-image sampling steps")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds: stop starting variants, and stop a running one, at this time after the start")
    parser.add_argument("--weights", type=Path, default=None, help="folder for the saved weights (kept)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="only (re)write --doc from a results JSON (one fetched from a GPU machine)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    if args.from_json:
        results = add_rates(json.loads(args.from_json.read_text()))
        write_block(args.doc or Path("docs/benchmarks.md"), render(results), START, END)
        return
    if args.worker:
        try:
            folder = references.sd15_folder(args.root, args.size)
            row_errors: list[str] = []
            rows = rows_for(folder, args.size, VARIANTS[args.worker], device, args.warmup, args.repeats, args.steps,
                            row_errors)
            print(json.dumps({"rows": rows, **({"error": "\n".join(row_errors)} if row_errors else {})}))
        except Exception:
            print(json.dumps({"error": traceback.format_exc()}))
            sys.exit(1)
        return

    started = time.perf_counter()
    info = describe(device)
    rows: list[dict] = []
    errors: dict[str, str] = {}
    command = "python -m benchmarks.gpu " + shlex.join(argv if argv is not None else sys.argv[1:])
    results = {"command": command, "machine": info, "size": args.size, "warmup": args.warmup, "repeats": args.repeats,
               "rows": rows, "errors": errors}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sfumato-gpu-bench-") as tmp:
        root = args.weights or Path(tmp)
        print(f"[{time.perf_counter() - started:5.0f}s] writing the {args.size} weights", file=sys.stderr, flush=True)
        references.sd15_folder(root, args.size)
        for variant in args.variants.split(","):
            left = args.deadline - (time.perf_counter() - started) if args.deadline else 3600.0
            if left < 30:
                errors[variant] = "not run: the run's deadline came first"
                continue
            print(f"[{time.perf_counter() - started:5.0f}s] {variant}", file=sys.stderr, flush=True)
            result = run_worker(variant, args, root, left)
            rows += result.get("rows", [])
            if "error" in result:
                errors[variant] = result["error"]
            results["duration_s"] = round(time.perf_counter() - started, 1)
            args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    add_rates(results)
    results["duration_s"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.doc is not None:
        write_block(args.doc, render(results), START, END)
    for name, error in errors.items():
        print(f"{name} failed:\n{error}", file=sys.stderr)
    for row in rows:
        print(f"{row['row']:20s} {row['variant']:14s} sfumato {row['sfumato_s'] * 1e3:9.2f} ms  diffusers "
              f"{row['reference_s'] * 1e3:9.2f} ms  ratio {row['ratio']:.2f}  max diff {row['max_abs_difference']:.1e}",
              file=sys.stderr)
    print(f"wrote {args.out} in {results['duration_s']} s", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
