"""``sfumato serve``'s HTTP API against the test doubles: jobs, images with their locks, request
limits as 4xx naming the field, a bounded queue, micro-batching, cancellation, events, failures
of the worker, shutdown, health, metrics and the OpenAPI document."""

from __future__ import annotations

import base64
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from serve.serve_helpers import wait_for

pytest.importorskip("fastapi")


def post(client, **body):
    return client.post("/v1/jobs", json=body)


def png(client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def test_a_job_makes_images_that_carry_their_lock(serve):
    client, service, _ = serve()
    answer = post(client, prompt="a red circle", seed=5, num_images=2)
    assert answer.status_code == 202 and answer.json()["status"] in ("queued", "running", "done")
    job = wait_for(client, answer.json()["id"])
    assert job["status"] == "done", job["error"]
    assert job["images_done"] == job["num_images"] == 2
    assert [image["seed"] for image in job["images"]] == [5, 6]
    for image in job["images"]:
        picture = png(client, image["url"])
        assert picture.size == (8, 8)
        embedded = json.loads(picture.text["sfumato"])
        lock = client.get(image["lock_url"]).json()
        assert embedded["arguments"] == lock["arguments"]
        assert lock["arguments"]["prompt"] == "a red circle" and lock["arguments"]["seed"] == image["seed"]


def test_a_served_image_replays_with_generate_from(serve, tmp_path, model_folder, monkeypatch):
    client, _, _ = serve()
    job = wait_for(client, post(client, prompt="a blue square", seed=3).json()["id"])
    served = tmp_path / "served.png"
    served.write_bytes(client.get(job["images"][0]["url"]).content)
    from sfumato.cli import main

    monkeypatch.setenv("SFUMATO_REGISTRY", str(model_folder / "registry.toml"))
    assert main(["generate", "--from", str(served), "--out", str(tmp_path / "replay.png"), "--no-progress"]) == 0
    assert np.array_equal(np.asarray(Image.open(served)), np.asarray(Image.open(tmp_path / "replay.png")))


@pytest.mark.parametrize("body, field, status", [
    ({"prompt": "a", "steps": 0}, ["body", "steps"], 422),
    ({"prompt": "a", "steps": "10"}, ["body", "steps"], 422),
    ({"prompt": "a", "steps": 5000}, ["body", "steps"], 422),  # beyond the model's timesteps
    ({"prompt": "a", "height": 10**9}, ["body", "height"], 422),
    ({"prompt": "a", "num_images": 17}, ["body", "num_images"], 422),  # the server's --max-images
    ({"prompt": "a", "num_images": 10**6}, ["body", "num_images"], 422),
    ({"prompt": "a", "num_images": 16, "height": 4096, "width": 4096}, ["body", "num_images"], 422),  # pixels
    ({"prompt": "a", "seed": -1}, ["body", "seed"], 422),
    ({"prompt": "a", "seed": 2**64}, ["body", "seed"], 422),
    ({"prompt": "x" * 9000}, ["body", "prompt"], 422),
    ({"prompt": "a", "label": 1}, ["body", "label"], 422),
    ({"label": 1}, ["body", "label"], 422),  # a text model has no classes
    ({"prompt": "a", "sampler": "ddim"}, ["body", "sampler"], 422),
    ({"prompt": "a", "scheduler": {"type": "nope"}}, ["body", "scheduler"], 422),
    ({"prompt": "a", "scheduler": {"type": "test.ddim", "steps": 0}}, ["body", "scheduler", "test.ddim", "steps"], 422),
    ({"prompt": "a", "preview": "yes"}, ["body", "preview"], 422),
])
def test_bad_requests_are_refused_naming_the_field(serve, body, field, status):
    client, service, gate = serve()
    answer = post(client, **body)
    assert answer.status_code == status, answer.text
    assert any(error["loc"] == field for error in answer.json()["detail"]), answer.json()
    assert gate.batches == [] and service.jobs == {}


def test_malformed_json_huge_bodies_and_non_finite_numbers_are_refused(serve):
    client, service, _ = serve()
    headers = {"content-type": "application/json"}
    assert client.post("/v1/jobs", content=b'{"prompt": "a",', headers=headers).status_code == 422
    assert client.post("/v1/jobs", content=b'{"prompt": "a", "guidance": NaN}', headers=headers).status_code == 422
    assert client.post("/v1/jobs", content=b'["a"]', headers=headers).status_code == 422
    megabyte = json.dumps({"prompt": "x" * 2**20}).encode()
    assert client.post("/v1/jobs", content=megabyte, headers=headers).status_code == 413
    assert service.jobs == {} and client.get("/health").status_code == 200


def test_the_queue_is_bounded(serve):
    client, service, gate = serve(max_queue=2)
    gate.close()
    running = post(client, prompt="a").json()["id"]
    assert gate.entered.wait(10)
    assert [post(client, prompt=p).status_code for p in ("b", "c")] == [202, 202]
    refused = post(client, prompt="d")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1" and "queue is full" in refused.text
    gate.open()
    assert wait_for(client, running)["status"] == "done"


@pytest.mark.parametrize("max_batch, forwards", [(8, [["a"], ["b", "c", "d"], ["e"]]),
                                                  (1, [["a"], ["b"], ["c"], ["d"], ["e"]])])
def test_compatible_queued_jobs_share_a_forward(serve, max_batch, forwards):
    client, service, gate = serve(max_batch=max_batch)
    gate.close()
    ids = [post(client, prompt="a", seed=1).json()["id"]]
    assert gate.entered.wait(10)  # "a" runs alone; the rest queue behind it
    ids += [post(client, prompt=p, seed=i).json()["id"] for i, p in enumerate("bcd", start=2)]
    ids.append(post(client, prompt="e", steps=3).json()["id"])  # other steps: another forward
    gate.open()
    assert [wait_for(client, i)["status"] for i in ids] == ["done"] * 5
    assert gate.batches == forwards
    assert service.metrics()["forwards_total"] == len(forwards)


def test_a_batched_job_gives_the_images_it_gives_alone(serve):
    client, _, gate = serve()
    gate.close()
    post(client, prompt="first", seed=1)
    assert gate.entered.wait(10)
    batched = [post(client, prompt=p, seed=9, negative="n").json()["id"] for p in ("x", "y", "z")]
    gate.open()
    alone = post(client, prompt="y", seed=9, negative="n").json()["id"]
    one = np.asarray(png(client, wait_for(client, batched[1])["images"][0]["url"]), dtype=int)
    two = np.asarray(png(client, wait_for(client, alone)["images"][0]["url"]), dtype=int)
    assert np.abs(one - two).max() <= 1  # per-sample seeds; at most 8-bit rounding of batch effects


def test_cancel_a_queued_and_a_running_job(serve):
    client, service, gate = serve()
    gate.close()
    running = post(client, prompt="a").json()["id"]
    assert gate.entered.wait(10)
    queued = post(client, prompt="b", steps=3).json()["id"]
    assert client.delete(f"/v1/jobs/{queued}").json()["status"] == "cancelled"
    assert client.delete(f"/v1/jobs/{running}").status_code == 200
    gate.open()
    job = wait_for(client, running)
    assert job["status"] == "cancelled" and job["images"] == [] and job["step"] == 0  # stopped at its first step
    assert gate.batches == [["a"]]  # the queued job never ran
    assert client.delete(f"/v1/jobs/{running}").status_code == 409
    assert client.delete("/v1/jobs/nope").status_code == 404
    assert client.get(f"/v1/jobs/{running}/images/0").status_code == 404
    assert list(service.folder.iterdir()) == []


def test_events_stream_progress_previews_and_the_result(serve):
    client, _, _ = serve(preview_every=1)
    job_id = post(client, prompt="a red circle", steps=4, preview=True).json()["id"]
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
    assert events[-1][0] == "done" and events[-1][1]["images_done"] == 1
    steps = [data["step"] for name, data in events if name == "progress" and data["status"] == "running"]
    assert steps == sorted(steps) and 4 in steps + [events[-1][1]["step"]]
    previews = [data["preview_png"] for _, data in events if data["preview_png"]]
    assert previews and Image.open(io.BytesIO(base64.b64decode(previews[-1]))).size == (8, 8)


def test_a_failed_forward_fails_its_jobs_and_the_server_goes_on(serve, monkeypatch):
    client, service, _ = serve()
    run = service.runner.run

    def broken(samples, callback=None):
        raise RuntimeError("the device fell over")

    service.runner.run = broken
    failed = wait_for(client, post(client, prompt="a").json()["id"])
    assert failed["status"] == "failed" and "the device fell over" in failed["error"]
    service.runner.run = run
    assert wait_for(client, post(client, prompt="b").json()["id"])["status"] == "done"


def test_a_worker_killed_mid_job_fails_the_job_and_a_new_worker_takes_over(serve):
    client, service, gate = serve()
    run = service.runner.run

    def killed(samples, callback=None):
        raise SystemExit("killed")  # what ends a thread, as a kill ends a process

    service.runner.run = killed
    job = wait_for(client, post(client, prompt="a").json()["id"])
    assert job["status"] == "failed" and "the worker stopped" in job["error"]
    service.runner.run = run
    assert wait_for(client, post(client, prompt="b").json()["id"])["status"] == "done"
    assert client.get("/health").status_code == 200
    assert "sfumato_worker_restarts_total 1" in client.get("/metrics").text


def test_shutdown_finishes_the_running_job_and_cancels_the_queued_ones(serve):
    client, service, gate = serve()
    gate.close()
    running = post(client, prompt="a").json()["id"]
    assert gate.entered.wait(10)
    queued = post(client, prompt="b").json()["id"]
    stopper = threading.Thread(target=service.shutdown)
    stopper.start()
    assert wait_for(client, queued)["status"] == "cancelled"
    refused = post(client, prompt="c")
    assert refused.status_code == 503 and client.get("/health").status_code == 503
    gate.open()
    stopper.join(10)
    assert wait_for(client, running)["status"] == "done"
    assert service.get(queued).error == "the server shut down before the job started"


def test_shutdown_can_cancel_the_running_job(serve):
    client, service, gate = serve()
    gate.close()
    running = post(client, prompt="a").json()["id"]
    assert gate.entered.wait(10)
    stopper = threading.Thread(target=service.shutdown, kwargs={"cancel_running": True})
    stopper.start()
    gate.open()
    stopper.join(10)
    assert wait_for(client, running)["status"] == "cancelled"


def test_health_and_metrics(serve):
    client, _, _ = serve()
    assert client.get("/health").json()["status"] == "ok"
    wait_for(client, post(client, prompt="a", num_images=3).json()["id"])
    text = client.get("/metrics").text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert values["sfumato_queue_length"] == "0" and values["sfumato_images_total"] == "3"
    assert float(values["sfumato_images_per_second"]) > 0
    assert values['sfumato_jobs_finished_total{status="done"}'] == "1"


def test_the_openapi_document_and_schema_carry_plugin_schedulers(serve):
    client, _, _ = serve()
    document = client.get("/openapi.json").json()
    assert "post" in document["paths"]["/v1/jobs"] and "/v1/jobs/{job_id}/events" in document["paths"]
    schema = client.get("/v1/schema").json()
    union = next(m for m in schema["properties"]["scheduler"]["anyOf"] if "oneOf" in m)
    assert {"test.ddim", "test.noisy", "ddim"} <= set(union["discriminator"]["mapping"])
    assert client.get("/docs").status_code == 200 and "<html" in client.get("/").text.lower()


def test_a_plugin_scheduler_with_its_fields_is_a_valid_request(serve):
    client, _, _ = serve()
    job = wait_for(client, post(client, prompt="a", scheduler={"type": "test.noisy", "steps": 3}, guidance=1.5)
                   .json()["id"])
    lock = client.get(job["images"][0]["lock_url"]).json()
    assert lock["spec"]["scheduler"] == {"type": "test.noisy", "steps": 3} and job["steps"] == 3
    assert lock["spec"]["guidance"][0]["scale"] == 1.5
