"""``sfumato serve`` as a real process: uvicorn on 127.0.0.1 on a free port, a job over HTTP with
its event stream, and a graceful shutdown on SIGTERM that finishes the running job (its stream
ends with ``done``), cancels the queued one (``cancelled``) and exits 0."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from serve.serve_helpers import served

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


def final_event(client, url: str, events: dict, key: str) -> None:
    """Read a job's event stream to its end; ``events[key]`` is the name of its last event."""
    with client.stream("GET", url, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events[key] = line[len("event: "):]


@pytest.mark.slow  # a real server process; the in-process tests cover the protocol
def test_serve_over_a_real_socket_and_shut_down_gracefully(model_folder):
    with served(model_folder, "--shutdown-timeout", "60") as (server, base), \
            httpx.Client(base_url=base, timeout=10) as client:
        job = client.post("/v1/jobs", json={"prompt": "a red circle", "seed": 1}).json()
        events: dict[str, str] = {}
        final_event(client, f"/v1/jobs/{job['id']}/events", events, "first")
        assert events["first"] == "done"
        done = client.get(f"/v1/jobs/{job['id']}").json()
        image = client.get(done["images"][0]["url"])
        assert image.headers["content-type"] == "image/png" and b"sfumato" in image.content

        # A long job runs while a second one waits; SIGTERM finishes the first, cancels the second.
        long = client.post("/v1/jobs", json={"prompt": "long", "steps": 1000, "num_images": 16}).json()
        queued = client.post("/v1/jobs", json={"prompt": "queued", "steps": 999}).json()
        readers = [threading.Thread(target=final_event, args=(client, f"/v1/jobs/{job_id}/events", events, key))
                   for job_id, key in ((long["id"], "long"), (queued["id"], "queued"))]
        for reader in readers:
            reader.start()
        while client.get(f"/v1/jobs/{long['id']}").json()["status"] != "running":
            time.sleep(0.01)
        server.send_signal(signal.SIGTERM)
        for reader in readers:
            reader.join(60)
        assert server.wait(60) == 0, server.stdout.read()
    assert events["long"] == "done" and events["queued"] == "cancelled", json.dumps(events)
