"""Scale-out figures for docs/scale.md, run by hand, on the loopback address only, bounded in
requests and time:

    python -m benchmarks.scale --out benchmarks/results/scale.json

1. Batch generation (``sfumato generate --prompts``): ``--lines`` prompts with one process and
   with two (``torchrun``), at ``--batch-size`` 1 and 8: images per second while generating (the
   run's time less that of a rerun, which loads the model, plans and skips every line), and
   whether the images agree byte for byte with the one-process run at the same batch size.
2. The server (``sfumato serve``): ``--requests`` requests from ``--clients`` concurrent clients,
   each following its job's event stream to the end and fetching the image, with micro-batching
   (``--max-batch 8``) and without (``--max-batch 1``): p50 and p95 latency (submit to the final
   event), images per second, and the server's resident memory after a warm-up and at the end.
3. Faults: malformed JSON, an unknown field, huge values and a 1 MB prompt each get a 4xx, and the
   server stays healthy.

Every process runs one thread (``OMP_NUM_THREADS=1``), so one process uses one core and two use two.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PROMPTS = ["a red circle", "a blue square above a green triangle", "two yellow circles", "a green square",
           "a red triangle left of a blue circle", "three blue triangles", "a yellow square below a red circle",
           "a green circle"]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def batch_run(root: Path, launcher: list[str], out: str, args: argparse.Namespace, batch_size: int) -> float:
    """Seconds for one ``generate --prompts`` run (model load included, as a user sees it)."""
    command = [*launcher, "-m", "sfumato", "generate", "--model", args.model, "--prompts", "prompts.txt", "--out", out,
               "--steps", str(args.steps), "--batch-size", str(batch_size), "--no-progress"]
    start = time.perf_counter()
    subprocess.run(command, cwd=root, env=environment(), check=True, capture_output=True, timeout=args.timeout)
    return time.perf_counter() - start


def batch_figures(args: argparse.Namespace) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="sfumato-scale-"))
    (root / "prompts.txt").write_text("".join(PROMPTS[i % len(PROMPTS)] + "\n" for i in range(args.lines)))
    torchrun = shutil.which("torchrun")
    rows = []
    try:
        for batch_size in (1, 8):
            for processes in (1, 2):
                if processes == 2 and torchrun is None:
                    continue
                launcher = [sys.executable] if processes == 1 else [torchrun, "--standalone", "--nproc-per-node", "2"]
                out = f"out-{processes}-{batch_size}"
                seconds = batch_run(root, launcher, out, args, batch_size)
                overhead = batch_run(root, launcher, out, args, batch_size)  # nothing left to make
                same = all((root / out / p.name).read_bytes() == p.read_bytes()
                           for p in (root / f"out-1-{batch_size}").iterdir())
                rows.append({"processes": processes, "batch_size": batch_size, "images": args.lines,
                             "seconds": round(seconds, 2), "startup_seconds": round(overhead, 2),
                             "images_per_second": round(args.lines / max(seconds - overhead, 1e-9), 2),
                             "same_bytes_as_one_process": same})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_request(client: httpx.Client, body: dict) -> float:
    """Submit, follow the events to the final one, fetch the image; seconds to the final event."""
    start = time.perf_counter()
    job = client.post("/v1/jobs", json=body)
    job.raise_for_status()
    job_id = job.json()["id"]
    final = None
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: ") and line[7:] in ("done", "failed", "cancelled"):
                final = line[7:]
    elapsed = time.perf_counter() - start
    if final != "done":
        raise RuntimeError(f"job {job_id} ended {final}")
    image = client.get(f"/v1/jobs/{job_id}/images/0")
    if image.headers.get("content-type") != "image/png":
        raise RuntimeError(f"job {job_id}: no PNG")
    return elapsed


def load(base: str, requests: int, clients: int, steps: int) -> tuple[list[float], float]:
    """``requests`` requests from ``clients`` threads: (latencies, wall seconds)."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                try:
                    latency = one_request(client, {"prompt": PROMPTS[i % len(PROMPTS)], "seed": i, "steps": steps})
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors.append(str(exc))
                    continue
                with lock:
                    latencies.append(latency)

    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return latencies, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def faults(base: str) -> dict[str, int]:
    """Status codes of bad requests; each must be a 4xx."""
    headers = {"content-type": "application/json"}
    cases = {
        "malformed JSON": b'{"prompt": "a",',
        "unknown field": json.dumps({"prompt": "a", "sampler": "ddim"}).encode(),
        "huge steps": json.dumps({"prompt": "a", "steps": 10**12}).encode(),
        "huge size": json.dumps({"prompt": "a", "height": 10**9, "width": 10**9}).encode(),
        "huge num_images": json.dumps({"prompt": "a", "num_images": 10**6}).encode(),
        "NaN guidance": b'{"prompt": "a", "guidance": NaN}',
        "1 MB prompt": json.dumps({"prompt": "x" * 2**20}).encode(),
    }
    with httpx.Client(base_url=base, timeout=60) as client:
        codes = {name: client.post("/v1/jobs", content=body, headers=headers).status_code
                 for name, body in cases.items()}
        codes["health afterwards"] = client.get("/health").status_code
    return codes


def serve_figures(args: argparse.Namespace) -> dict:
    rows, fault_codes = [], {}
    for max_batch in (8, 1):
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "sfumato", "serve", args.model, "--port", str(port), "--max-batch", str(max_batch),
             "--max-queue", str(args.requests)],
            env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.2)
            load(base, args.clients, args.clients, args.steps)  # warm-up: one request per client
            before = resident_mb(server.pid)
            latencies, seconds = load(base, args.requests, args.clients, args.steps)
            after = resident_mb(server.pid)
            metrics = httpx.get(f"{base}/metrics").text
            forwards = next(int(float(line.split()[1])) for line in metrics.splitlines()
                            if line.startswith("sfumato_forwards_total"))
            rows.append({
                "max_batch": max_batch, "requests": args.requests, "clients": args.clients,
                "p50_seconds": round(percentile(latencies, 50), 3), "p95_seconds": round(percentile(latencies, 95), 3),
                "images_per_second": round(args.requests / seconds, 2), "forwards": forwards,
                "resident_mb_before": round(before, 1), "resident_mb_after": round(after, 1),
            })
            print(json.dumps(rows[-1]), flush=True)
            if max_batch == 8:
                fault_codes = faults(base)
                print(json.dumps(fault_codes), flush=True)
        finally:
            server.terminate()
            server.wait(60)
    return {"load": rows, "faults": fault_codes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes", help="a built-in model (default: shapes)")
    parser.add_argument("--steps", type=int, default=8, help="sampling steps of every image (default: 8)")
    parser.add_argument("--lines", type=int, default=64, help="prompt file lines for the batch runs (default: 64)")
    parser.add_argument("--requests", type=int, default=200, help="server requests per configuration (default: 200)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one batch run may take")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    results = {"model": args.model, "steps": args.steps, "cpus": os.cpu_count()}
    if not args.skip_batch:
        results["batch"] = batch_figures(args)
    if not args.skip_serve:
        results["serve"] = serve_figures(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
