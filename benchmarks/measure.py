"""How a case is measured: interleaved timing, FLOP counting and peak resident memory.

Timing: after ``warmup`` calls of each implementation, ``repeats`` rounds call sfumato then the
reference (so both see the same background load, which on a shared machine drifts), and each
figure is the median of its calls.

Peak memory: the rise of the process's peak resident set size (``VmHWM``) over its resident set
before the call, read from /proc/self/status after resetting the peak through
/proc/self/clear_refs (Linux >= 4.0). The worker that measures memory runs with
``MALLOC_MMAP_THRESHOLD_=65536`` so glibc hands every freed block above 64 KiB back to the OS:
otherwise memory freed by an earlier call is reused without raising the peak, and the second
implementation measured would look cheaper than it is. This is ``resource.getrusage``'s max RSS,
made resettable so one worker can measure several calls. ``tracemalloc`` would miss torch's
allocations (they are not Python objects) and the torch profiler's memory view sums allocations
per op rather than reporting a peak.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

#: Environment of a memory worker (see the module docstring).
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def interleaved_medians(
    calls: dict[str, Callable[[], Any]], warmup: int, repeats: int, synchronize: Callable[[], None] = lambda: None,
) -> dict[str, dict[str, float]]:
    """Median, min and max seconds per call of each callable, timed in interleaved rounds.

    :param synchronize: called before and after each timed call (a GPU's work is asynchronous:
        a call's time is its wall time to a finished result)."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            synchronize()
            start = time.perf_counter()
            call()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return {
        name: {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "runs": len(ts)}
        for name, ts in times.items()
    }


def count_flops(call: Callable[[], Any]) -> int:
    """FLOPs of one call as ``torch.utils.flop_counter`` counts them (matmuls, convolutions and
    attention; elementwise work and normalisations are not counted)."""
    with FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _release_freed_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the peak may then be underestimated
        pass


def peak_memory_mib(call: Callable[[], Any]) -> float | None:
    """Peak resident memory one call adds above what the process held before it, in MiB
    (None where /proc/self/clear_refs is unavailable)."""
    _release_freed_memory()
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _status_kib("VmRSS")
    call()
    return (_status_kib("VmHWM") - before) / 1024


def no_grad(call: Callable[[], Any]) -> Callable[[], Any]:
    def run():
        with torch.inference_mode():
            return call()
    return run


def run_json_worker(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a benchmark worker process (from the repository root) and return the JSON object of
    its last ``{...}`` line of output, or ``{"error": the end of its stderr}`` when it printed none."""
    import json
    import subprocess
    from pathlib import Path

    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": f"worker exited with {done.returncode}: {done.stderr[-2000:]}"}

