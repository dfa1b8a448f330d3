"""The generation service behind ``sfumato serve``: a bounded queue of jobs, one worker thread
that owns the loaded pipeline and runs compatible queued jobs as one forward (micro-batching),
and the table of jobs that clients poll, stream, fetch and cancel.

It knows nothing of HTTP (``sfumato.serve.app`` puts FastAPI in front of it), so it is tested and
reused directly: the Ray Serve deployment wraps the same service.

- A job is one request: ``num_images`` samples, seeds ``seed``, ``seed + 1``, ... (a random seed
  when the request gives none), all with one ``Sample.batch_key``.
- A worker takes the oldest queued job and every later queued job with the same key, up to
  ``max_batch`` images (waiting ``batch_wait`` seconds for more when there are fewer), and runs
  them in forwards of at most ``max_batch`` images. ``max_batch = 1`` turns micro-batching off.
- Cancelling a queued job removes it; a running one stops at the next step when every job in its
  forward is cancelled, else its images are discarded when the forward ends.
- A failure inside a forward fails that forward's jobs with the error's message and the worker
  goes on; if a worker thread itself dies, its jobs are failed and a new worker starts. No job
  is ever left running without a worker.
- There is one worker per device the runner drives: one for a local pipeline; one per replica
  when the forwards run elsewhere (``sfumato.serve.ray_serve``).
- Images are written as PNGs with their lock into the service's folder; a finished job is kept
  until ``keep_jobs`` newer ones have finished, then forgotten and its files removed.
"""

from __future__ import annotations

import base64
import io
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import SfumatoError
from ..generation import MAX_IMAGES, ArgumentError, to_pil
from ..generation_requests import GenerationRequest, Sample, SampleRunner
from ..outputs import save_image
from ..sampling import StepEvent

#: Side of the step previews, in pixels (the longer side).
PREVIEW_SIDE = 64
#: Seconds over which ``images_per_second`` is measured.
RATE_WINDOW = 60.0


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = (JobStatus.done, JobStatus.failed, JobStatus.cancelled)


class QueueFull(SfumatoError):
    """The queue holds ``max_queue`` jobs (HTTP 429)."""


class ShuttingDown(SfumatoError):
    """The service takes no new jobs (HTTP 503)."""


class JobFinished(SfumatoError):
    """A finished job cannot be cancelled (HTTP 409)."""


class Cancelled(Exception):
    """Raised from the step callback to stop a forward whose jobs are all cancelled."""


@dataclass(eq=False)  # jobs are compared and hashed by identity
class Job:
    """One request and what has become of it. ``version`` grows at every change (streams
    send an event when it does)."""

    id: str
    samples: list[Sample]
    preview: bool = False
    status: JobStatus = JobStatus.queued
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    step: int = 0
    steps: int = 0
    images_done: int = 0
    files: list[Path] = field(default_factory=list)
    locks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    preview_png: str | None = None
    cancel_requested: bool = False
    version: int = 0

    @property
    def key(self) -> tuple:
        return self.samples[0].batch_key

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


class Service:
    """The queue, the worker and the jobs of one loaded pipeline.

    :param runner: the pipeline, loaded once; every job runs on it.
    :param folder: where images are written (one PNG per image, with its lock).
    :param max_queue: most jobs waiting; ``submit`` raises ``QueueFull`` beyond it.
    :param max_batch: most images in one forward (1: no micro-batching).
    :param batch_wait: seconds the worker waits for more compatible jobs when a batch is short.
    :param max_images: most images one request may ask for.
    :param preview_every: a job that asks for previews gets one every this many steps.
    :param keep_jobs: finished jobs kept for clients to fetch; older ones are forgotten.
    :param workers: worker threads, each running one forward at a time.
    """

    def __init__(self, runner: SampleRunner, folder: Path, *, max_queue: int = 64, max_batch: int = 8,
                 batch_wait: float = 0.0, max_images: int = 16, preview_every: int = 4, keep_jobs: int = 256,
                 workers: int = 1):
        self.runner, self.folder = runner, Path(folder)
        self.max_queue, self.max_batch, self.batch_wait = max_queue, max_batch, batch_wait
        self.max_images, self.preview_every, self.keep_jobs = max_images, preview_every, keep_jobs
        self.workers = workers
        self.jobs: dict[str, Job] = {}
        self.queue: deque[Job] = deque()
        self.running: list[Job] = []
        self.accepting = True
        self._stopping = False
        self._cancel_running = False
        self._changed = threading.Condition()
        self._finished_order: deque[str] = deque()
        self._rate: deque[tuple[float, int]] = deque()  # (time, images) of recent forwards
        self.finished_counts = {status: 0 for status in FINISHED}
        self.images_total = 0
        self.forwards = 0
        self.worker_restarts = 0
        self._threads: list[threading.Thread] = []

    # -- the clients' side ------------------------------------------------------------------

    def submit(self, request: GenerationRequest, num_images: int = 1, preview: bool = False) -> Job:
        """Queue a validated request.

        :raises ArgumentError: naming the request's field, for what the model refuses.
        :raises QueueFull: when ``max_queue`` jobs wait. :raises ShuttingDown: after ``shutdown``.
        """
        if not 1 <= num_images <= min(self.max_images, MAX_IMAGES):
            raise ArgumentError("num_images", f"{num_images} is out of range: this server makes 1 to "
                                f"{min(self.max_images, MAX_IMAGES)} images per request")
        base = request.seed if request.seed is not None else secrets.randbelow(2**31)
        samples = [self.runner.sample(request.model_copy(update={"seed": base + i}), 0) for i in range(num_images)]
        for sample in samples:
            self.runner.check(sample, num_images=num_images)
        with self._changed:
            if not self.accepting:
                raise ShuttingDown("the server is shutting down and takes no new jobs")
            if len(self.queue) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} jobs waiting); retry later")
            job = Job(id=uuid.uuid4().hex, samples=samples, preview=preview)
            self.jobs[job.id] = job
            self.queue.append(job)
            self._changed.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a job: a queued one at once, a running one at its next step (see the module).

        :raises JobFinished: for a job that already finished.
        """
        with self._changed:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            if job.is_finished:
                raise JobFinished(f"job {job_id} already {job.status.value}")
            job.cancel_requested = True
            if job.status is JobStatus.queued:
                self.queue.remove(job)
                self._finish(job, JobStatus.cancelled, "cancelled by the client")
            self._touch(job)
        return job

    def metrics(self) -> dict[str, Any]:
        with self._changed:
            now = time.time()
            while self._rate and self._rate[0][0] < now - RATE_WINDOW:
                self._rate.popleft()
            span = min(RATE_WINDOW, now - self._rate[0][0]) if self._rate else 0.0
            return {
                "queue_length": len(self.queue),
                "jobs_running": len(self.running),
                "jobs_finished_total": {status.value: n for status, n in self.finished_counts.items()},
                "images_total": self.images_total,
                "images_per_second": sum(n for _, n in self._rate) / span if span > 0 else 0.0,
                "forwards_total": self.forwards,
                "worker_restarts": self.worker_restarts,
                "worker_alive": self.worker_alive,
            }

    @property
    def worker_alive(self) -> bool:
        """Every worker thread runs."""
        return len(self._threads) == self.workers and all(thread.is_alive() for thread in self._threads)

    # -- lifetime -----------------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(self.workers - len(self._threads)):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._work, name="sfumato-serve-worker", daemon=True)
        self._threads.append(thread)
        thread.start()

    def begin_shutdown(self, cancel_running: bool = False) -> None:
        """Take no new jobs, cancel the queued ones, and let the running ones finish (or cancel
        them at their next step). Returns at once; ``shutdown`` waits."""
        with self._changed:
            self.accepting = False
            self._stopping = True
            self._cancel_running = cancel_running
            while self.queue:
                job = self.queue.popleft()
                job.cancel_requested = True
                self._finish(job, JobStatus.cancelled, "the server shut down before the job started")
            if cancel_running:
                for job in self.running:
                    job.cancel_requested = True
                    self._touch(job)
            self._changed.notify_all()

    def shutdown(self, cancel_running: bool = False, timeout: float = 30.0) -> None:
        """``begin_shutdown``, then wait for the worker; after ``timeout`` seconds the running
        jobs are cancelled at their next step."""
        self.begin_shutdown(cancel_running)
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            self.begin_shutdown(cancel_running=True)
            for thread in list(self._threads):
                thread.join(timeout)

    # -- the worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        batch: list[Job] = []
        try:
            while True:
                batch = self._take_batch()
                if not batch:
                    return
                self._run(batch)
        except BaseException as exc:  # noqa: BLE001 - the thread dies: no job may be left running
            with self._changed:
                for job in batch:
                    if not job.is_finished:
                        self._finish(job, JobStatus.failed, f"the worker stopped during the job "
                                     f"({type(exc).__name__}: {exc}); submit it again")
                self.running = [job for job in self.running if job not in batch]
                self._threads.remove(threading.current_thread())
                if not self._stopping:
                    self.worker_restarts += 1
                    self._spawn()

    def _take_batch(self) -> list[Job]:
        """The oldest queued job and the later ones that can share its forwards (up to
        ``max_batch`` images), once the queue holds one; empty when the service stops."""
        with self._changed:
            while not self.queue and not self._stopping:
                self._changed.wait()
            if not self.queue:
                return []
            deadline = time.monotonic() + self.batch_wait
            while self._compatible_images() < self.max_batch and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            first = self.queue[0]
            batch, images = [], 0
            for job in list(self.queue):
                if job.key == first.key and (not batch or images + len(job.samples) <= self.max_batch):
                    batch.append(job)
                    images += len(job.samples)
            for job in batch:
                self.queue.remove(job)
                job.status, job.started = JobStatus.running, time.time()
                self._touch(job)
            self.running += batch
            return batch

    def _compatible_images(self) -> int:
        first = self.queue[0]
        return sum(len(job.samples) for job in self.queue if job.key == first.key)

    def _run(self, jobs: list[Job]) -> None:
        """Run ``jobs`` in forwards of at most ``max_batch`` images and record the outcome."""
        rows = [(job, index) for job in jobs for index in range(len(job.samples))]
        try:
            for start in range(0, len(rows), self.max_batch):
                chunk = rows[start:start + self.max_batch]
                images = self.runner.run([job.samples[i] for job, i in chunk], self._callback(chunk))
                self._record(chunk, images)
        except Cancelled:
            pass
        except Exception as exc:  # noqa: BLE001 - a failed forward fails its jobs, not the server
            message = str(exc) if isinstance(exc, SfumatoError) else f"{type(exc).__name__}: {exc}"
            with self._changed:
                for job in jobs:
                    self._finish(job, JobStatus.failed, message)
        with self._changed:
            for job in jobs:
                if not job.is_finished:
                    if job.cancel_requested:
                        self._finish(job, JobStatus.cancelled, "cancelled")
                    else:
                        self._finish(job, JobStatus.done)
            self.running = [job for job in self.running if job not in jobs]

    def _callback(self, chunk: list[tuple[Job, int]]):
        jobs = list(dict.fromkeys(job for job, _ in chunk))

        def on_step(event: StepEvent) -> None:
            if all(job.cancel_requested for job in jobs):
                raise Cancelled
            previews = {}
            if (event.i + 1) % self.preview_every == 0 or event.i + 1 == event.total:
                for row, (job, _) in enumerate(chunk):
                    if job.preview and job not in previews:
                        previews[job] = self._preview(event.denoised[row:row + 1])
            with self._changed:
                for job in jobs:
                    job.step, job.steps = event.i + 1, event.total
                    if job in previews:
                        job.preview_png = previews[job]
                    self._touch(job)

        return on_step

    def _preview(self, denoised: Any) -> str:
        """A small PNG of one sample's current x0 prediction, base64-encoded."""
        autoencoder = self.runner.pipe.component("autoencoder")
        decoded = autoencoder.decode(denoised) if autoencoder is not None else denoised
        image = to_pil(decoded)[0]
        image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def _record(self, chunk: list[tuple[Job, int]], images: list[Any]) -> None:
        written = []
        for (job, index), image in zip(chunk, images):
            if job.cancel_requested:
                continue
            sample = job.samples[index]
            lock = self.runner.lock(sample)
            path = save_image(image, self.folder / f"{job.id}-{index}.png", lock)
            written.append((job, path, lock))
        with self._changed:
            now = time.time()
            self.forwards += 1
            self.images_total += len(chunk)
            self._rate.append((now, len(chunk)))
            for job, path, lock in written:
                job.files.append(path)
                job.locks.append(lock)
                job.images_done += 1
                self._touch(job)

    # -- bookkeeping (under the lock) -----------------------------------------------------------

    def _touch(self, job: Job) -> None:
        job.version += 1

    def _finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        self.finished_counts[status] += 1
        job.status, job.error, job.finished = status, error, time.time()
        if status is not JobStatus.done:
            self._remove_files(job)
        self._touch(job)
        self._finished_order.append(job.id)
        while len(self._finished_order) > self.keep_jobs:
            old = self.jobs.pop(self._finished_order.popleft(), None)
            if old is not None:
                self._remove_files(old)

    @staticmethod
    def _remove_files(job: Job) -> None:
        for path in job.files:
            path.unlink(missing_ok=True)
        job.files, job.locks = [], []

