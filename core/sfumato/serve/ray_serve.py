"""``sfumato serve`` on Ray Serve (the ``ray`` extra): the same HTTP app, with the forwards spread
over replicas that each load the pipeline on their own device.

Two deployments:

- ``Generator`` (``replicas`` copies, ``gpus`` each): the pipeline, loaded once per replica;
  ``run(samples)`` makes one batch's images.
- ``Ingress`` (one copy): the FastAPI app of ``sfumato.serve.app`` and its ``Service`` (queue,
  micro-batching, job table, limits) with one worker thread per replica, whose runner sends each
  batch to a ``Generator`` replica. The job table lives here, so polling, events, images and
  cancelling work whichever replica made a job. The ingress loads the pipeline too, on its CPU,
  to check requests against the model and write each image's lock.

A replica that dies mid-batch fails that batch's jobs (the call raises; the job says why) and
Ray Serve starts a new replica. Steps of a remote forward are not streamed: a job's events are
``progress`` when it starts and its final event, and there are no previews; cancelling a running
job discards its images when the batch ends.

    ray start --head
    python -m sfumato.serve.ray_serve SPEC --replicas 2 [--gpus 1] [--port 8000]

or from Python: ``serve.run(sfumato.serve.ray_serve.application(spec, replicas=2))``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray import serve

from ..generation_requests import Sample, SampleRunner
from ..pipeline import Pipeline
from .jobs import Service


@serve.deployment
class Generator:
    """One replica: the pipeline on this replica's device."""

    def __init__(self, spec: str, overrides: list[str] | None = None):
        self.runner = SampleRunner(Pipeline.load(spec, overrides=overrides or None))

    def run(self, samples: list[Sample]) -> list[Any]:
        return self.runner.run(samples)


class RemoteRunner:
    """A ``SampleRunner`` whose forwards run on ``Generator`` replicas; requests are checked and
    locks written by a local copy of the pipeline."""

    def __init__(self, local: SampleRunner, generator: Any):
        self.local, self.generator = local, generator
        self.pipe = local.pipe

    def sample(self, request: Any, seed: int) -> Sample:
        return self.local.sample(request, seed)

    def check(self, sample: Sample, num_images: int = 1) -> None:
        self.local.check(sample, num_images)

    def lock(self, sample: Sample) -> dict[str, Any]:
        return self.local.lock(sample)

    def run(self, samples: list[Sample], callback: Any = None) -> list[Any]:
        return self.generator.run.remote(samples).result()


@serve.deployment(num_replicas=1)
@serve.ingress()
class Ingress:
    """The HTTP app and its service; forwards go to ``generator`` (a ``Generator`` handle)."""

    def __init__(self, generator: Any, spec: str, overrides: list[str] | None, replicas: int,
                 options: dict[str, Any]):
        local = SampleRunner(Pipeline.load(spec, overrides=[*(overrides or []), "runtime.device=cpu"]))
        self.folder = Path(tempfile.mkdtemp(prefix="sfumato-ray-serve-"))
        self.service = Service(RemoteRunner(local, generator), self.folder, workers=replicas, **options)

    def __serve_build_asgi_app__(self):
        from .app import create_app

        return create_app(self.service, title="sfumato on Ray Serve")

    def __del__(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def application(spec: str, overrides: list[str] | None = None, *, replicas: int = 2, gpus: float = 0,
                **options: Any):
    """The Ray Serve application: ``Ingress`` bound to ``replicas`` ``Generator`` copies.

    :param options: ``Service`` options (``max_queue``, ``max_batch``, ``max_images``, ...).
    """
    generator = Generator.options(num_replicas=replicas, ray_actor_options={"num_gpus": gpus}).bind(spec, overrides)
    return Ingress.bind(generator, spec, overrides, replicas, options)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sfumato.serve.ray_serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", help="a spec file or built-in model name")
    parser.add_argument("--set", action="append", default=[], metavar="TABLE.FIELD=VALUE")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--gpus", type=float, default=0, help="GPUs per replica")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-queue", type=int, default=64)
    args = parser.parse_args(argv)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(application(args.spec, args.set, replicas=args.replicas, gpus=args.gpus, max_batch=args.max_batch,
                          max_queue=args.max_queue), name="sfumato", route_prefix="/", blocking=True)


if __name__ == "__main__":
    main()
