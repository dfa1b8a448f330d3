"""A server over the test doubles, in-process (FastAPI's TestClient), with a gate that holds the
worker inside its forward so tests can see jobs queued and running."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import sfumato  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sfumato.generation_requests import SampleRunner  # noqa: E402
from sfumato.serve.app import create_app  # noqa: E402
from sfumato.serve.jobs import Service  # noqa: E402

from batch.model_folder import write_model_folder  # noqa: E402
from serve.serve_helpers import Gate  # noqa: E402


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return write_model_folder(tmp_path_factory.mktemp("models"))


@pytest.fixture
def registry(model_folder):
    """The first-party plugins plus the doubles (local plugin ``test``), process-wide."""
    registry = sfumato.Registry(local=str(model_folder / "registry.toml"))
    previous = sfumato.set_registry(registry)
    yield registry
    sfumato.set_registry(previous)


@pytest.fixture
def serve(model_folder, registry, tmp_path):
    """``serve(spec="text.json", **service_options)`` -> (client, service, gate), inside the
    app's lifespan (the worker runs)."""
    stack = []

    @contextmanager
    def start(spec: str = "text.json", **options):
        pipe = sfumato.Pipeline.load(model_folder / spec, registry=registry)
        runner = SampleRunner(pipe)
        gate = Gate(runner)
        service = Service(runner, tmp_path / "images", **options)
        with TestClient(create_app(service, shutdown_timeout=10)) as client:
            yield client, service, gate
        gate.open()

    def enter(spec: str = "text.json", **options):
        context = start(spec, **options)
        stack.append(context)
        return context.__enter__()

    yield enter
    for context in reversed(stack):
        context.__exit__(None, None, None)
