"""``sfumato serve [SPEC]``: load a spec once and serve it over HTTP until interrupted.

Every option is checked before the model loads (exit 2 naming it, as every command does). On
SIGINT or SIGTERM the server stops taking jobs, cancels the queued ones, finishes the running
ones (``--on-shutdown cancel`` stops them at their next step instead), then exits.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..generation import MAX_IMAGES
from ..generation_requests import SampleRunner
from ..pipeline import Pipeline
from ..registry import get_registry
from ..replay import check_generation_task
from .jobs import Service

DEFAULT_MODEL = "shapes"
#: Each integer option with its range (inclusive; None: no upper bound).
RANGES = {
    "port": (0, 65535), "max_queue": (1, None), "max_batch": (1, MAX_IMAGES), "max_images": (1, MAX_IMAGES),
    "preview_every": (1, None), "keep_jobs": (1, None),
}
#: Each float option with its range.
FLOAT_RANGES = {"batch_wait_ms": (0.0, 60_000.0), "shutdown_timeout": (0.0, 3600.0)}


def add(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="serve a spec over HTTP: a job queue with progress, previews, images "
                            "with locks, health and metrics (needs the serve extra)")
    parser.add_argument("spec", nargs="?", help=f"a spec file or built-in model name (default: {DEFAULT_MODEL})")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.FIELD=VALUE", help="override a spec value")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                        "only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    parser.add_argument("--max-queue", type=int, default=64, help="jobs that may wait; more get HTTP 429 (default: 64)")
    parser.add_argument("--max-batch", type=int, default=8,
                        help="most images in one forward; compatible queued jobs share it (default: 8; 1: no batching)")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0,
                        help="how long a short batch waits for more compatible jobs (default: 0)")
    parser.add_argument("--max-images", type=int, default=16, help="most images one request may ask for (default: 16)")
    parser.add_argument("--preview-every", type=int, default=4,
                        help="steps between the previews of a job that asks for them (default: 4)")
    parser.add_argument("--keep-jobs", type=int, default=256,
                        help="finished jobs kept for clients to fetch; older ones are forgotten (default: 256)")
    parser.add_argument("--out", help="folder for the images (default: a temporary folder, removed at exit)")
    parser.add_argument("--on-shutdown", choices=("finish", "cancel"), default="finish",
                        help="what happens to running jobs at shutdown (queued ones are always cancelled)")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0,
                        help="seconds to wait for running jobs at shutdown before cancelling them (default: 30)")
    parser.set_defaults(handler=run)


def check_options(args: argparse.Namespace) -> None:
    """Every number in range, before anything loads."""
    for name, (low, high) in {**RANGES, **FLOAT_RANGES}.items():
        value = getattr(args, name)
        if value != value or value < low or (high is not None and value > high):  # value != value: nan
            allowed = f"{low} to {high}" if high is not None else f"at least {low}"
            raise SpecError(f"--{name.replace('_', '-')}: {value} is out of range: it must be {allowed}")


def check_port(host: str, port: int) -> None:
    """Refuse an address the server could not listen on, before the model loads."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise SpecError(f"--host {host}: not an address of this machine ({exc})") from None
    with socket.socket(info[0], socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(info[4])
        except OSError as exc:
            raise SpecError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def output_folder(out: str | None) -> tuple[Path, bool]:
    """``(folder, temporary)``: ``--out`` (a folder, created if missing) or a new temporary one."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix="sfumato-serve-")), True
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise SpecError(f"--out {out} is a file; give a folder for the images")
    return path, False


def run(args: argparse.Namespace) -> int:
    check_options(args)
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise SpecError(f"sfumato serve needs FastAPI and uvicorn ({exc.name} is not installed): "
                        "pip install 'sfumato[serve]'") from None
    check_port(args.host, args.port)
    folder, temporary = output_folder(args.out)
    try:
        registry = get_registry()
        target = args.spec or DEFAULT_MODEL
        pipe = Pipeline.load(target, overrides=args.set or None, registry=registry)
        task = pipe.component("task")
        if task is not None:
            check_generation_task({"task": task.type_name()}, registry, str(target))
        service = Service(SampleRunner(pipe), folder, max_queue=args.max_queue, max_batch=args.max_batch,
                          batch_wait=args.batch_wait_ms / 1000, max_images=args.max_images,
                          preview_every=args.preview_every, keep_jobs=args.keep_jobs)
        cancel = args.on_shutdown == "cancel"
        app = create_app(service, cancel_running_on_shutdown=cancel, shutdown_timeout=args.shutdown_timeout,
                         title=f"sfumato: {target}")
        config = uvicorn.Config(app, host=args.host, port=args.port, timeout_graceful_shutdown=args.shutdown_timeout)
        graceful_server(uvicorn.Server, config, service, cancel).run()
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def graceful_server(server_class: Any, config: Any, service: Any, cancel_running: bool) -> Any:
    """A uvicorn server that, on SIGINT or SIGTERM, first stops the service taking jobs and
    cancels the queued ones, so open event streams end and uvicorn's own graceful shutdown
    (waiting for open connections) does not wait for jobs that will never run. The signal is
    not raised again after the shutdown (uvicorn's default): a graceful stop exits 0; a second
    SIGINT forces the exit."""

    class GracefulServer(server_class):
        def handle_exit(self, sig: int, frame: Any) -> None:
            service.begin_shutdown(cancel_running)
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    return GracefulServer(config)
