"""``torchrun --nproc-per-node 2 -m sfumato generate --prompts`` (and ``--ray local`` with two
Ray workers): the processes share the batches, and the union of their outputs (images, locks and
the merged manifest) equals a one-process run byte for byte, on the built-in shapes model, whose
U-Net is not batch-invariant in float32."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TORCHRUN = shutil.which("torchrun")
LINES = [
    {"prompt": "a red circle"},
    {"prompt": "a blue square above a green triangle"},
    {"prompt": "two yellow circles", "seed": 5},
    {"prompt": "a green square", "scheduler": {"type": "euler-ancestral", "steps": 3}},
    {"prompt": "a red triangle left of a blue circle"},
    {"prompt": "three circles", "guidance": 2.0},
]


def sfumato_generate(launcher: list[str], cwd: Path, out: str, *options: str) -> None:
    # One thread per process in every run: float results depend on the thread count.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*launcher, "-m", "sfumato", "generate", "--prompts", "lines.jsonl", "--out", out, "--steps", "3",
               "--batch-size", "2", "--no-progress", *options]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The folder of a one-process run of ``LINES``, ``one/`` inside it."""
    root = tmp_path_factory.mktemp("sharded")
    (root / "lines.jsonl").write_text("".join(json.dumps(line) + "\n" for line in LINES))
    sfumato_generate([sys.executable], root, "one")
    return root


def assert_same_files(one: Path, other: Path) -> None:
    names = [*(f"{n:06d}.png" for n in range(1, len(LINES) + 1)), "manifest.jsonl"]
    assert sorted(p.name for p in other.iterdir()) == sorted(p.name for p in one.iterdir()) == names
    for name in names:
        assert (one / name).read_bytes() == (other / name).read_bytes(), name


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_two_processes_write_what_one_writes_byte_for_byte(one_process):
    sfumato_generate([TORCHRUN, "--standalone", "--nproc-per-node", "2"], one_process, "two")
    assert_same_files(one_process / "one", one_process / "two")


@pytest.mark.slow
def test_two_ray_workers_write_what_one_process_writes(one_process):
    pytest.importorskip("ray")
    sfumato_generate([sys.executable], one_process, "ray", "--ray", "local", "--ray-workers", "2")
    assert_same_files(one_process / "one", one_process / "ray")
