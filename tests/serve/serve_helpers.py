"""Helpers of the server tests: a gate that holds the worker inside its forward, and polling."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sfumato.generation_requests import SampleRunner


class Gate:
    """Wraps a runner's ``run``: records each forward's size and, while closed, holds the
    worker at the start of its forward."""

    def __init__(self, runner: SampleRunner):
        self.batches: list[list[str | None]] = []
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.opened.set()
        run = runner.run

        def gated(samples, callback=None):
            self.batches.append([s.prompt for s in samples])
            self.entered.set()
            assert self.opened.wait(30), "the test never opened the gate"
            return run(samples, callback)

        runner.run = gated

    def close(self) -> None:
        self.entered.clear()
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()


def wait_for(client, job_id: str, status: str | tuple[str, ...] = ("done", "failed", "cancelled"),
             timeout: float = 20.0) -> dict:
    """Poll a job until its status is one of ``status``."""
    wanted = (status,) if isinstance(status, str) else status
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in wanted:
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {wanted}: {job}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(model_folder: Path, *options: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``sfumato serve text.json`` over the doubles as a real process on a free port of
    127.0.0.1: ``(process, base URL)`` once ``/health`` answers 200; stopped at the end if alive."""
    import httpx

    port = free_port()
    env = {**os.environ, "SFUMATO_REGISTRY": str(model_folder / "registry.toml"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "sfumato", "serve", "text.json", "--port", str(port), *options],
                               cwd=model_folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{process.stdout.read() if process.stdout else ''}")
            time.sleep(0.1)
        yield process, base
    finally:
        if process.poll() is None:  # a graceful stop removes the server's temporary image folder
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
