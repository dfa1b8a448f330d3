"""``sfumato generate`` for image-to-image and inpainting (``--image``, ``--mask``, ``--strength``,
``--mask-blur``), ``--cfg``, numbered files in ``--out-dir``, and the WebUI ``parameters`` text."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import sfumato
from sfumato.cli import main
from sfumato.outputs import read_lock

FAST = ["--model", "shapes", "--steps", "4", "--no-progress"]


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    finally:
        sfumato.set_registry(None)


@pytest.fixture
def source(tmp_path, monkeypatch):
    """A shapes image and a mask of its right half, in the working folder."""
    monkeypatch.chdir(tmp_path)
    assert run(["generate", "a red circle above a blue square", *FAST, "--seed", "3", "--out", "src.png"]) == 0
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 255
    Image.fromarray(mask).save("mask.png")
    return np.asarray(Image.open("src.png").convert("RGB"), dtype=np.int16), mask == 0


def test_inpainting_keeps_the_unmasked_pixels_exactly(source):
    pixels, keep = source
    assert run(["generate", "a green triangle", *FAST, "--image", "src.png", "--mask", "mask.png",
                "--mask-blur", "0", "--out", "inpainted.png"]) == 0
    out = np.asarray(Image.open("inpainted.png").convert("RGB"), dtype=np.int16)
    assert np.abs(out - pixels)[keep].max() == 0  # pasted back, not the autoencoder's round trip
    assert np.abs(out - pixels)[~keep].mean() > 5  # the masked half is new
    arguments = read_lock("inpainted.png")["arguments"]
    assert arguments["image"] and arguments["mask"] and arguments["strength"] == 1.0


def test_mask_blur_softens_only_the_seam(source):
    pixels, keep = source
    assert run(["generate", "a green triangle", *FAST, "--image", "src.png", "--mask", "mask.png",
                "--out", "soft.png"]) == 0  # the default blur, 4 pixels
    error = np.abs(np.asarray(Image.open("soft.png").convert("RGB"), dtype=np.int16) - pixels).max(axis=-1)
    assert error[:, :20].max() == 0 and error[:, 24:32].max() > 0  # blended within the blur of the seam


def test_image_to_image_starts_from_the_image(source):
    pixels, _ = source
    assert run(["generate", "a red circle above a blue square", *FAST, "--image", "src.png", "--strength", "0.3",
                "--out", "close.png"]) == 0
    assert run(["generate", "a red circle above a blue square", *FAST, "--image", "src.png", "--strength", "1",
                "--out", "far.png"]) == 0
    close, far = (np.abs(np.asarray(Image.open(f).convert("RGB"), dtype=np.int16) - pixels).mean()
                  for f in ("close.png", "far.png"))
    assert close < far
    assert read_lock("close.png")["arguments"]["strength"] == 0.3


def test_out_dir_numbers_each_image_with_its_own_seed_and_the_parameters_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["generate", "a blue square", *FAST, "--num-images", "2", "--seed", "7", "--cfg", "3.5",
            "--negative", "blurry", "--sampler", "DPM++ 2M Karras"]
    assert run([*argv, "--out", "grid.png", "--out-dir", "images"]) == 0
    assert run([*argv, "--out", "grid2.png", "--out-dir", "images"]) == 0
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == ["00000-7.png", "00001-8.png", "00002-7.png", "00003-8.png"]
    lock = read_lock(tmp_path / "images" / "00001-8.png")
    assert lock["arguments"]["seed"] == 8 and lock["arguments"]["num_images"] == 1
    assert [g["scale"] for g in lock["spec"]["guidance"]] == [3.5]
    alone = sfumato.generate(sfumato.load_pipeline("shapes", {"guidance": lock["spec"]["guidance"],
                                                             "scheduler": lock["spec"]["scheduler"]}),
                             progress=False, **{k: v for k, v in lock["arguments"].items()
                                                if k not in ("latents", "image", "mask")})
    second = np.asarray(Image.open(tmp_path / "images" / "00001-8.png").convert("RGB"))
    # the file is the one-sample call it records (to a level: float kernels round per batch size)
    assert np.abs(np.asarray(alone.images[0], dtype=np.int16) - second).max() <= 1
    text = Image.open(tmp_path / "images" / "00001-8.png").text["parameters"]
    lines = text.split("\n")
    assert lines[0] == "a blue square" and lines[1] == "Negative prompt: blurry"
    assert lines[2].startswith("Steps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 3.5, Seed: 8, "
                               "Size: 64x64, Model hash: ")
    assert lines[2].endswith("Model: shapes")
