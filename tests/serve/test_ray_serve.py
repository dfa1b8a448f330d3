"""``sfumato.serve.ray_serve``: the server's app on Ray Serve, with two ``Generator`` replicas of
the built-in shapes model behind one ingress, on a local Ray cluster: jobs are spread over the
replicas, and killing a replica mid-job fails that job with the reason (never loses it) while
Ray Serve replaces the replica and later jobs succeed.

Needs the ``ray`` extra (hundreds of MB, not in the test extra): skipped without it."""

from __future__ import annotations

import importlib.util
import time

import pytest

from serve.serve_helpers import free_port

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
# Ray is imported by the test itself: collecting the default (not slow) tests never loads it.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra")]


def finished(client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster owned by this test process (``ray.shutdown`` stops all of it)."""
    import ray
    from ray import serve

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_replicas_share_the_jobs_and_a_killed_replica_fails_its_job(cluster):
    import ray
    from ray import serve

    from sfumato.serve.ray_serve import application

    serve.run(application("shapes", ["scheduler.steps=4"], replicas=2, max_batch=2), name="sfumato",
              route_prefix="/")
    deployments = serve.status().applications["sfumato"].deployments
    assert deployments["Generator"].replica_states == {"RUNNING": 2}
    with httpx.Client(base_url=cluster, timeout=60) as client:
        assert client.get("/health").json()["status"] == "ok"
        ids = [client.post("/v1/jobs", json={"prompt": f"a red circle {i}", "seed": i}).json()["id"] for i in range(4)]
        jobs = [finished(client, job_id) for job_id in ids]
        assert [job["status"] for job in jobs] == ["done"] * 4
        image = client.get(jobs[0]["images"][0]["url"])
        assert image.headers["content-type"] == "image/png" and b"sfumato" in image.content

        # Kill every Generator replica while a long job runs on one of them.
        long = client.post("/v1/jobs", json={"prompt": "long", "steps": 1000, "num_images": 2}).json()["id"]
        while client.get(f"/v1/jobs/{long}").json()["status"] != "running":
            time.sleep(0.05)
        time.sleep(0.5)
        replicas = [actor for actor in ray.util.list_named_actors(all_namespaces=True)
                    if "Generator" in actor["name"]]
        assert len(replicas) == 2
        for actor in replicas:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=False)
        failed = finished(client, long)
        assert failed["status"] == "failed" and failed["error"], failed

        deadline = time.monotonic() + 120
        while True:  # Ray Serve starts new replicas; the server goes on
            job = finished(client, client.post("/v1/jobs", json={"prompt": "after", "seed": 1}).json()["id"])
            if job["status"] == "done" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert job["status"] == "done", job
