"""The HTTP API of ``sfumato serve``: FastAPI in front of a ``Service`` (``sfumato.serve.jobs``).

| method and path | does |
|---|---|
| ``POST /v1/jobs`` | queue a generation request: 202 with the job; 422 naming the field (``detail[].loc``), 429 when the queue is full, 413 for a body over ``MAX_BODY_BYTES``, 503 while shutting down |
| ``GET /v1/jobs/{id}`` | the job: status, progress, images |
| ``GET /v1/jobs/{id}/events`` | server-sent events: ``progress`` at every step (with a base64 PNG preview when the request asked for one), then ``done``, ``failed`` or ``cancelled`` |
| ``GET /v1/jobs/{id}/images/{n}`` | image ``n`` as a PNG carrying its lock (``sfumato generate --from`` replays it) |
| ``GET /v1/jobs/{id}/images/{n}/lock`` | that lock as JSON |
| ``DELETE /v1/jobs/{id}`` | cancel the job (409 once it has finished) |
| ``GET /health`` | 200 while the worker runs and jobs are taken, else 503 |
| ``GET /metrics`` | Prometheus text: queue length, running jobs, finished jobs by status, images, images/s |
| ``GET /v1/schema`` | the JSON schema of a request (plugin schedulers and their fields included) |
| ``GET /`` | a small page to try the server, built from that schema |
| ``GET /docs``, ``/openapi.json`` | the OpenAPI page and document |

The request model is built from the loaded plugins (``request_model``), so a third-party
scheduler and its fields are valid requests and appear in the schema, the OpenAPI document and
the page.
"""

import asyncio
from contextlib import asynccontextmanager
from typing import Any, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from .._version import __version__
from ..generation import MAX_IMAGES, ArgumentError
from ..generation_requests import GenerationRequest, lock_sha256, request_model
from .jobs import Job, JobFinished, QueueFull, Service, ShuttingDown
from .page import page_html

#: Largest request body in bytes (a request with two prompts of ``MAX_PROMPT_CHARS`` fits).
MAX_BODY_BYTES = 256 * 1024
#: How often an event stream looks for changes of its job, in seconds.
POLL_SECONDS = 0.05


class ServeRequest(GenerationRequest):
    """A request to the server: a generation request, how many images, and whether to stream previews."""

    num_images: int = Field(1, ge=1, le=MAX_IMAGES, description="Images to make, with seeds seed, seed + 1, ...")
    preview: bool = Field(False, description="Send a small PNG of the current prediction with progress events.")


class ImageView(BaseModel):
    index: int
    seed: int
    url: str
    lock_url: str
    lock_sha256: str


class JobView(BaseModel):
    """A job as clients see it. ``step`` of ``steps`` counts the current forward's steps;
    ``images_done`` of ``num_images`` the images made."""

    id: str
    status: str
    created: float
    started: Optional[float] = None
    finished: Optional[float] = None
    step: int
    steps: int
    images_done: int
    num_images: int
    images: list[ImageView]
    error: Optional[str] = None
    preview_png: Optional[str] = Field(None, description="Base64 PNG of the latest preview (events only).")


def job_view(job: Job, preview: bool = False) -> JobView:
    base = f"/v1/jobs/{job.id}/images"
    images = [ImageView(index=i, seed=lock["arguments"]["seed"], url=f"{base}/{i}", lock_url=f"{base}/{i}/lock",
                        lock_sha256=lock_sha256(lock)) for i, lock in enumerate(list(job.locks))]
    return JobView(
        id=job.id, status=job.status.value, created=job.created, started=job.started, finished=job.finished,
        step=job.step, steps=job.steps, images_done=job.images_done, num_images=len(job.samples), images=images,
        error=job.error, preview_png=job.preview_png if preview else None,
    )


def field_error(exc: ArgumentError) -> HTTPException:
    """A model-dependent problem in the shape of FastAPI's validation errors, naming the field."""
    return HTTPException(422, detail=[{"loc": ["body", exc.argument], "msg": exc.problem, "type": "value_error"}])


def validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's validation errors with each input shortened to its first 80 characters: an
    echoed 200 kB prompt helps nobody, and a NaN cannot be written as JSON at all."""
    return [{"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"],
             "input": repr(error.get("input"))[:80]} for error in exc.errors()]


def prometheus_text(metrics: dict[str, Any]) -> str:
    """``metrics`` in the Prometheus text exposition format."""
    rows = [
        ("queue_length", "gauge", "Jobs waiting in the queue.", metrics["queue_length"]),
        ("jobs_running", "gauge", "Jobs in the forward being run.", metrics["jobs_running"]),
        ("images_total", "counter", "Images made since the server started.", metrics["images_total"]),
        ("images_per_second", "gauge", "Images made per second over the last minute.", metrics["images_per_second"]),
        ("forwards_total", "counter", "Batched generation calls run.", metrics["forwards_total"]),
        ("worker_restarts_total", "counter", "Times the worker died and was restarted.", metrics["worker_restarts"]),
    ]
    lines = []
    for name, kind, help_text, value in rows:
        lines += [f"# HELP sfumato_{name} {help_text}", f"# TYPE sfumato_{name} {kind}", f"sfumato_{name} {value}"]
    lines += ["# HELP sfumato_jobs_finished_total Jobs finished, by status.",
              "# TYPE sfumato_jobs_finished_total counter"]
    lines += [f'sfumato_jobs_finished_total{{status="{status}"}} {n}'
              for status, n in metrics["jobs_finished_total"].items()]
    return "\n".join(lines) + "\n"


def create_app(service: Service, *, cancel_running_on_shutdown: bool = False, shutdown_timeout: float = 30.0,
               title: str = "sfumato") -> FastAPI:
    """The FastAPI app serving ``service``. Its lifespan starts the worker and, at shutdown,
    cancels queued jobs and finishes (or cancels) the running ones (``Service.shutdown``)."""
    RequestModel = request_model(service.runner.pipe.registry, ServeRequest)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        await asyncio.to_thread(service.shutdown, cancel_running_on_shutdown, shutdown_timeout)

    app = FastAPI(title=title, version=__version__, lifespan=lifespan, max_body_size=MAX_BODY_BYTES,
                  description="Generation jobs on one loaded sfumato pipeline: queue, progress, images with locks.")
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc)}, status_code=422)

    def find(job_id: str) -> Job:
        job = service.get(job_id)
        if job is None:
            raise HTTPException(404, detail=f"no job {job_id!r} (finished jobs are kept for the last "
                                f"{service.keep_jobs})")
        return job

    def image_of(job_id: str, index: int) -> tuple[Job, int]:
        job = find(job_id)
        if not job.is_finished:
            raise HTTPException(409, detail=f"job {job_id} is {job.status.value}; its images come when it is done")
        if not 0 <= index < len(job.files):
            has = f"{len(job.files)} image(s): index 0 to {len(job.files) - 1}" if job.files else \
                f"no images ({job.status.value})"
            raise HTTPException(404, detail=f"job {job_id} has {has}")
        return job, index

    @app.post("/v1/jobs", status_code=202, response_model=JobView, responses={
        413: {"description": "The body is larger than the server accepts."},
        422: {"description": "A field is invalid (``detail[].loc`` names it)."},
        429: {"description": "The queue is full; retry later."},
        503: {"description": "The server is shutting down."},
    })
    def submit(body: RequestModel) -> JobView:  # type: ignore[valid-type]
        """Queue a generation request; the job's ``id`` is what the other routes take."""
        try:
            job = service.submit(body, num_images=body.num_images, preview=body.preview)
        except ArgumentError as exc:
            raise field_error(exc) from None
        except QueueFull as exc:
            raise HTTPException(429, detail=str(exc), headers={"Retry-After": "1"}) from None
        except ShuttingDown as exc:
            raise HTTPException(503, detail=str(exc)) from None
        return job_view(job)

    @app.get("/v1/jobs/{job_id}", response_model=JobView)
    def status(job_id: str) -> JobView:
        return job_view(find(job_id))

    @app.get("/v1/jobs/{job_id}/events", response_class=EventSourceResponse)
    async def events(job_id: str):
        """``progress`` events while the job is queued or running, then one final event named
        after its status; each carries the job (and, when asked for, the latest preview)."""
        job = find(job_id)
        version = -1
        while True:
            if job.version != version:
                version, finished = job.version, job.is_finished
                view = job_view(job, preview=job.preview)
                yield ServerSentEvent(data=view, event=view.status if finished else "progress", id=str(version))
                if finished:
                    return
            await asyncio.sleep(POLL_SECONDS)

    @app.get("/v1/jobs/{job_id}/images/{index}", response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}}})
    def image(job_id: str, index: int):
        job, index = image_of(job_id, index)
        return FileResponse(job.files[index], media_type="image/png", filename=f"{job.id}-{index}.png")

    @app.get("/v1/jobs/{job_id}/images/{index}/lock")
    def lock(job_id: str, index: int) -> dict[str, Any]:
        job, index = image_of(job_id, index)
        return job.locks[index]

    @app.delete("/v1/jobs/{job_id}", response_model=JobView)
    def cancel(job_id: str) -> JobView:
        """Cancel a job: at once when queued, at its next step when running."""
        try:
            job = service.cancel(job_id)
        except JobFinished as exc:
            raise HTTPException(409, detail=str(exc)) from None
        if job is None:
            find(job_id)
        return job_view(job)

    @app.get("/health")
    def health() -> JSONResponse:
        alive, accepting = service.worker_alive, service.accepting
        state = "ok" if alive and accepting else "shutting down" if not accepting else "no worker"
        return JSONResponse({"status": state, "model": service.runner.pipe.source, "version": __version__},
                            status_code=200 if state == "ok" else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return prometheus_text(service.metrics())

    @app.get("/v1/schema")
    def schema() -> dict[str, Any]:
        """The JSON schema of ``POST /v1/jobs`` bodies."""
        return RequestModel.model_json_schema()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return page_html(title)

    return app
