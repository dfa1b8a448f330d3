"""The machine a run measured: CPU model, cores, library versions, load, and its matmul ceiling."""

from __future__ import annotations

import os
import platform
import time

import torch


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_supported() -> bool:
    """True when oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe() -> dict:
    """Everything a reader needs to compare numbers across machines."""
    import diffusers
    import transformers

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),  # the workers use the same number
        "isa": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "bf16": bf16_supported(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "load_average_start": load_average(),
    }


def matmul_peak(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5) -> float:
    """The machine's dense matmul ceiling in FLOP/s: the best of ``repeats`` ``size``-square
    GEMMs (``2 size^3`` FLOPs each) at the process's thread count. Best rather than median,
    since it is a ceiling: a loaded machine only lowers it."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up: oneDNN picks and caches its kernel
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)

