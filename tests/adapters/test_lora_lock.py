"""``sfumato generate --lora FILE[:SCALE]`` (repeatable) applies LoRAs after the spec's own; the
image's lock records each adapter's file hash and scale, ``--from`` replays it bit for bit and
refuses a LoRA file that changed since; Python's ``load_adapter`` makes the same image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import sfumato
from sfumato.cli import main
from sfumato.outputs import read_lock

pytest.importorskip("diffusers")

from adapters.lora_files import random_lora, write_kohya, write_peft  # noqa: E402
from sd.tiny_sd import SIZE  # noqa: E402

ARGS = ["--steps", "2", "--height", str(SIZE), "--width", str(SIZE), "--seed", "3", "--no-progress"]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def lora_files(tiny_sd, tmp_path_factory):
    pipe = sfumato.load_pipeline(tiny_sd)
    folder = tmp_path_factory.mktemp("loras")
    unet = {"unet": pipe.denoiser}  # the U-Net's module names are diffusers' own
    return (write_kohya(random_lora(unet, rank=4, alpha=2.0, seed=1, every=2), folder / "style.safetensors"),
            write_peft(random_lora(unet, rank=2, alpha=2.0, seed=2, every=3), folder / "detail.safetensors"))


def test_the_lock_records_each_lora_and_from_replays_it(tiny_sd, lora_files, tmp_path, capsys):
    style, detail = lora_files
    first, second, plain = tmp_path / "first.png", tmp_path / "second.png", tmp_path / "plain.png"
    assert main(["generate", "a red circle", "--spec", str(tiny_sd), "--lora", f"{style}:0.7", "--lora", str(detail),
                 "--out", str(first), *ARGS]) == 0
    lock = read_lock(first)
    assert lock["weights"]["adapters.0.weights"] == sfumato.file_sha256(style)
    assert lock["weights"]["adapters.1.weights"] == sfumato.file_sha256(detail)
    assert [(a["type"], a["scale"]) for a in lock["spec"]["adapters"]] == [("lora", 0.7), ("lora", 1.0)]

    assert main(["generate", "--from", str(first), "--out", str(second), "--no-progress"]) == 0
    assert np.array_equal(pixels(first), pixels(second))
    assert main(["generate", "a red circle", "--spec", str(tiny_sd), "--out", str(plain), *ARGS]) == 0
    assert not np.array_equal(pixels(first), pixels(plain))  # the LoRAs changed the image

    pipe = sfumato.load_pipeline(tiny_sd)
    pipe.load_adapter(style, scale=0.7)
    pipe.load_adapter(detail)
    result = pipe("a red circle", steps=2, height=SIZE, width=SIZE, seed=3, progress=False)
    assert np.array_equal(np.asarray(result.images[0]), pixels(first))

    detail.write_bytes(style.read_bytes())  # the file the lock names has changed
    capsys.readouterr()
    assert main(["generate", "--from", str(first), "--out", str(tmp_path / "third.png"), "--no-progress"]) == 2
    assert "adapters.1.weights" in capsys.readouterr().err
