"""``sfumato generate --prompts FILE --out DIR`` with bad input: the prompt file (every line
checked against the request model and then the model, before any work, each problem naming the
line and the field), the options that conflict with it, the output folder and its manifest.

The models are the test doubles saved beside their specs (``batch.model_folder``)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from bad_input.harness import Case, check, run_cli
from batch.model_folder import TEXT_SPEC, write_model_folder

GEN = ["--registry", "registry.toml", "generate", "--spec", "text.json", "--no-progress"]
CLASS = ["--registry", "registry.toml", "generate", "--spec", "class.json", "--no-progress"]


def models(*then: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        write_model_folder(root)
        (root / "unguided.json").write_text(json.dumps({**{k: v for k, v in TEXT_SPEC.items() if v is not None},
                                                        "guidance": []}))
        for step in then:
            step(root)

    return setup


def text(name: str, content: str | bytes) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return write


def lines(*objects: Any, name: str = "p.jsonl") -> Callable[[Path], None]:
    return text(name, "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects))


P = ["--prompts", "p.jsonl", "--out", "out"]


def manifest_with(entry: dict[str, Any] | str) -> Callable[[Path], None]:
    content = entry if isinstance(entry, str) else json.dumps(entry)
    return text("out/manifest.jsonl", content + "\n")


SERVE = ["--registry", "registry.toml", "serve", "text.json"]
#: Sockets the port cases hold open while the command runs.
LISTENING: list[socket.socket] = []


def listening(port_file: str = "port") -> Callable[[Path], None]:
    """Listen on a free port of 127.0.0.1 (written to ``port_file``) for the rest of the test."""

    def listen(root: Path) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        LISTENING.append(sock)
        (root / port_file).write_text(str(sock.getsockname()[1]))

    return listen


CASES = [
    # the prompt file
    Case("prompts-missing", [*GEN, "--prompts", "nope.txt", "--out", "out"], ["--prompts nope.txt", "no such file"],
         models()),
    Case("prompts-a-folder", [*GEN, "--prompts", "dir", "--out", "out"], ["--prompts dir", "not a file"],
         models(lambda root: (root / "dir").mkdir())),
    Case("prompts-empty", [*GEN, "--prompts", "p.txt", "--out", "out"], ["p.txt", "holds no prompts"],
         models(text("p.txt", ""))),
    Case("prompts-only-blank-lines", [*GEN, "--prompts", "p.txt", "--out", "out"], ["holds no prompts"],
         models(text("p.txt", "\n  \n\t\n"))),
    Case("prompts-not-utf8", [*GEN, "--prompts", "p.txt", "--out", "out"], ["p.txt", "line 2", "not UTF-8"],
         models(text("p.txt", b"a red circle\n\xff\xfe square\n"))),
    Case("jsonl-not-json", [*GEN, *P], ["p.jsonl", "line 2", "not JSON"],
         models(lines({"prompt": "a"}, "{prompt: 'b'}"))),
    Case("jsonl-not-an-object", [*GEN, *P], ["line 1", "a JSON object per line", "list"], models(lines(["a"]))),
    Case("jsonl-unknown-field", [*GEN, *P], ["line 1", "sampler", "extra inputs"],
         models(lines({"prompt": "a", "sampler": "ddim"}))),
    Case("jsonl-steps-zero", [*GEN, *P], ["line 1", "steps", "greater than or equal to 1"],
         models(lines({"prompt": "a", "steps": 0}))),
    Case("jsonl-steps-a-string", [*GEN, *P], ["line 1", "steps", "valid integer"],
         models(lines({"prompt": "a", "steps": "10"}))),
    Case("jsonl-steps-a-fraction", [*GEN, *P], ["line 1", "steps", "valid integer"],
         models(lines({"prompt": "a", "steps": 2.5}))),
    Case("jsonl-steps-a-boolean", [*GEN, *P], ["line 1", "steps", "valid integer"],
         models(lines({"prompt": "a", "steps": True}))),
    Case("jsonl-height-huge", [*GEN, *P], ["line 1", "height", "4096"],
         models(lines({"prompt": "a", "height": 100000}))),
    Case("jsonl-width-negative", [*GEN, *P], ["line 1", "width", "greater than or equal to 1"],
         models(lines({"prompt": "a", "width": -8}))),
    Case("jsonl-seed-negative", [*GEN, *P], ["line 1", "seed", "greater than or equal to 0"],
         models(lines({"prompt": "a", "seed": -1}))),
    Case("jsonl-seed-beyond-64-bits", [*GEN, *P], ["line 1", "seed", "18446744073709551615"],
         models(lines({"prompt": "a", "seed": 2**64}))),
    Case("jsonl-prompt-too-long", [*GEN, *P], ["line 1", "prompt", "8192 characters"],
         models(lines({"prompt": "x" * 9000}))),
    Case("jsonl-prompt-not-text", [*GEN, *P], ["line 1", "prompt", "valid string"], models(lines({"prompt": 5}))),
    Case("jsonl-guidance-nan", [*GEN, *P], ["line 1", "guidance", "finite"],
         models(text("p.jsonl", '{"prompt": "a", "guidance": NaN}\n'))),
    Case("jsonl-scheduler-unknown-type", [*GEN, *P], ["line 1", "scheduler", "'nope'", "test.ddim"],
         models(lines({"prompt": "a", "scheduler": {"type": "nope"}}))),
    Case("jsonl-scheduler-bad-field", [*GEN, *P], ["line 1", "scheduler", "steps", "greater than or equal to 1"],
         models(lines({"prompt": "a", "scheduler": {"type": "test.ddim", "steps": 0}}))),
    Case("jsonl-scheduler-unknown-field", [*GEN, *P], ["line 1", "scheduler", "eta", "extra inputs"],
         models(lines({"prompt": "a", "scheduler": {"type": "test.ddim", "eta": 1}}))),
    Case("jsonl-every-bad-line-listed", [*GEN, *P], ["line 1: steps", "line 3: height"],
         models(lines({"prompt": "a", "steps": 0}, {"prompt": "b"}, {"prompt": "c", "height": 0}))),
    # lines the model refuses (checked after loading it, before any image)
    Case("line-steps-beyond-timesteps", [*GEN, *P], ["line 2", "steps", "1 to 1000"],
         models(lines({"prompt": "a"}, {"prompt": "b", "steps": 5000}))),
    Case("line-label-with-a-prompt", [*GEN, *P], ["line 1", "label", "not both"],
         models(lines({"prompt": "a", "label": 1}))),
    Case("line-label-on-a-text-model", [*GEN, *P], ["line 1", "label", "not class-conditional"],
         models(lines({"label": 1}))),
    Case("line-label-not-a-class", [*CLASS, *P], ["line 2", "label", "0 to 2"],
         models(lines({"label": 1}, {"label": 7}))),
    Case("line-negative-without-a-prompt", [*CLASS, *P], ["line 1", "negative", "needs a prompt"],
         models(lines({"label": 1, "negative": "x"}))),
    Case("line-prompt-on-a-class-model", [*CLASS, *P], ["line 1", "prompt", "no [text_encoder]"],
         models(lines({"prompt": "a"}))),
    Case("line-guidance-without-guidance", [*GEN[:4], "unguided.json", "--no-progress", *P],
         ["line 1", "guidance", "no [[guidance]] with a scale"], models(lines({"prompt": "a", "guidance": 3.0}))),
    Case("line-seed-past-the-last-from-the-base", [*GEN, *P, "--seed", str(2**64 - 1)],
         ["line 1", "--seed (plus the line number)", "out of range"], models(lines({"prompt": "a"}))),
    # options
    Case("prompts-and-a-prompt", [*GEN, "a red circle", *P], ["a prompt or --prompts", "not both"],
         models(lines({"prompt": "a"}))),
    Case("prompts-and-from", ["--registry", "registry.toml", "generate", "--from", "a.png", *P],
         ["--from", "--prompts", "not both"], models(lines({"prompt": "a"}))),
    Case("prompts-and-num-images", [*GEN, *P, "--num-images", "2"], ["--num-images", "one image"],
         models(lines({"prompt": "a"}))),
    Case("batch-size-zero", [*GEN, *P, "--batch-size", "0"], ["--batch-size", "1 to 1024"],
         models(lines({"prompt": "a"}))),
    Case("batch-size-huge", [*GEN, *P, "--batch-size", "5000"], ["--batch-size", "1 to 1024"],
         models(lines({"prompt": "a"}))),
    Case("batch-size-without-prompts", [*GEN, "a", "--batch-size", "2", "--out", "a.png"],
         ["--batch-size", "only with --prompts"], models()),
    Case("option-steps-zero", [*GEN, *P, "--steps", "0"], ["--steps", "greater than or equal to 1"],
         models(lines({"prompt": "a"}))),
    Case("option-label-negative", [*CLASS, *P, "--label", "-1"], ["--label", "greater than or equal to 0"],
         models(lines({"seed": 1}))),
    Case("option-height-huge", [*GEN, *P, "--height", "100000"], ["--height", "4096"],
         models(lines({"prompt": "a"}))),
    Case("option-seed-negative", [*GEN, *P, "--seed", "-1"], ["--seed", "out of range"],
         models(lines({"prompt": "a"}))),
    Case("option-steps-beyond-timesteps", [*GEN, *P, "--steps", "5000"], ["line 1", "steps", "1 to 1000"],
         models(lines({"prompt": "a"}))),
    Case("ray-without-prompts", [*GEN, "a", "--ray", "local", "--out", "a.png"], ["--ray", "only with --prompts"],
         models()),
    Case("ray-workers-without-ray", [*GEN, *P, "--ray-workers", "2"], ["--ray-workers", "need --ray ADDRESS"],
         models(lines({"prompt": "a"}))),
    Case("ray-workers-zero", [*GEN, *P, "--ray", "local", "--ray-workers", "0"], ["--ray-workers", "at least 1"],
         models(lines({"prompt": "a"}))),
    Case("ray-gpus-negative", [*GEN, *P, "--ray", "local", "--ray-gpus", "-1"], ["--ray-gpus", "0 to 64"],
         models(lines({"prompt": "a"}))),
    Case("ray-gpus-nan", [*GEN, *P, "--ray", "local", "--ray-gpus", "nan"], ["--ray-gpus", "out of range"],
         models(lines({"prompt": "a"}))),
    # the output folder and its manifest
    Case("out-missing", [*GEN, "--prompts", "p.jsonl"], ["--prompts needs --out"], models(lines({"prompt": "a"}))),
    Case("out-a-file", [*GEN, *P[:2], "--out", "notes.txt"], ["--out notes.txt is a file"],
         models(lines({"prompt": "a"}), text("notes.txt", "x"))),
    Case("out-under-a-file", [*GEN, *P[:2], "--out", "notes.txt/out"], ["is a file, not a folder"],
         models(lines({"prompt": "a"}), text("notes.txt", "x"))),
    Case("out-someone-elses-folder", [*GEN, *P], ["--out out", "no manifest.jsonl", "new or empty folder"],
         models(lines({"prompt": "a"}), text("out/holiday.jpg", "x"))),
    Case("out-made-with-another-lock", [*GEN, *P], ["line(s) 1", "another lock", "--overwrite"],
         models(lines({"prompt": "a"}), text("out/000001.png", "x"),
                manifest_with({"line": 1, "file": "000001.png", "seed": 1, "lock": "0" * 64}))),
    Case("out-manifest-not-ours", [*GEN, *P], ["manifest.jsonl line 1", "not a manifest entry"],
         models(lines({"prompt": "a"}), manifest_with('{"hello": "world"}'))),
]


SERVE_CASES = [
    Case("serve-port-out-of-range", [*SERVE, "--port", "70000"], ["--port", "0 to 65535"], models()),
    Case("serve-max-queue-zero", [*SERVE, "--max-queue", "0"], ["--max-queue", "at least 1"], models()),
    Case("serve-max-batch-huge", [*SERVE, "--max-batch", "5000"], ["--max-batch", "1 to 1024"], models()),
    Case("serve-max-images-zero", [*SERVE, "--max-images", "0"], ["--max-images", "1 to 1024"], models()),
    Case("serve-batch-wait-negative", [*SERVE, "--batch-wait-ms", "-5"], ["--batch-wait-ms", "0.0 to"], models()),
    Case("serve-batch-wait-nan", [*SERVE, "--batch-wait-ms", "nan"], ["--batch-wait-ms", "out of range"], models()),
    Case("serve-shutdown-timeout-negative", [*SERVE, "--shutdown-timeout", "-1"], ["--shutdown-timeout"], models()),
    Case("serve-on-shutdown-unknown", [*SERVE, "--on-shutdown", "later"], ["--on-shutdown", "finish", "cancel"],
         models()),
    Case("serve-host-unknown", [*SERVE, "--host", "no such host!", "--port", "0"], ["--host no such host!"],
         models()),
    Case("serve-out-a-file", [*SERVE, "--port", "0", "--out", "notes.txt"], ["--out notes.txt is a file"],
         models(text("notes.txt", "x"))),
    Case("serve-unknown-model", ["--registry", "registry.toml", "serve", "nope", "--port", "0"],
         ["unknown model 'nope'"], models()),
    Case("serve-spec-invalid", [*SERVE, "--port", "0", "--set", "scheduler.steps=0"], ["scheduler", "steps"],
         models()),
]


@pytest.mark.parametrize("case", CASES + SERVE_CASES, ids=lambda c: c.id)
def test_bad_batch_input(case: Case, tmp_path, capsys, monkeypatch):
    check(case, tmp_path, capsys, monkeypatch)


def test_serve_refuses_a_port_in_use(tmp_path, capsys, monkeypatch):
    models(listening())(tmp_path)
    port = (tmp_path / "port").read_text()
    try:
        message = check(Case("serve-port-in-use", [*SERVE, "--port", port], [f"--port {port}", "cannot listen"]),
                        tmp_path, capsys, monkeypatch)
    finally:
        for sock in LISTENING:
            sock.close()
        LISTENING.clear()
    assert "in use" in message


def test_ray_without_the_extra_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "sfumato.batch_ray", raising=False)
    message = check(Case("ray-not-installed", [*GEN, *P, "--ray", "local"], ["--ray needs Ray", "sfumato[ray]"],
                         models(lines({"prompt": "a"}))), tmp_path, capsys, monkeypatch)
    assert "Traceback" not in message


def test_serve_without_the_extra_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    models()(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli([*SERVE, "--port", "0"], capsys)
    assert code == 2 and "pip install 'sfumato[serve]'" in err and "Traceback" not in err
