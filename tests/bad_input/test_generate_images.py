"""``sfumato generate`` with bad image-to-image, inpainting, ``--cfg`` and ``--out-dir`` options:
exit 2 naming the option, before any work, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bad_input.harness import Case, check
from bad_input.test_generate import GEN, file, folder, models


def image(name: str, size: tuple[int, int] = (8, 8), mode: str = "RGB"):
    return lambda root: Image.new(mode, size).save(root / name)


def huge_header(root: Path) -> None:
    """A PNG header claiming 100000 x 100000 pixels (a decompression bomb), no pixel data."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    (root / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk
                                    + struct.pack(">I", zlib.crc32(chunk)))


@pytest.fixture(autouse=True)
def local_registry(monkeypatch):
    """Every command loads the doubles' registry file from its scratch folder."""
    monkeypatch.setenv("SFUMATO_REGISTRY", "registry.toml")


CASES = [
    Case("image-missing", [*GEN, "--image", "nope.png"], ["--image", "nope.png does not exist"], models()),
    Case("image-a-folder", [*GEN, "--image", "pics"], ["--image", "pics is a folder"], models(folder("pics"))),
    Case("image-not-an-image", [*GEN, "--image", "junk.png"], ["--image", "junk.png", "not an image"],
         models(file("junk.png", "text"))),
    Case("image-a-decompression-bomb", [*GEN, "--image", "bomb.png"], ["--image", "bomb.png"],
         models(huge_header)),
    Case("mask-without-image", [*GEN, "--mask", "m.png"], ["--mask", "only with --image"], models(image("m.png"))),
    Case("strength-without-image", [*GEN, "--strength", "0.5"], ["--strength", "only with --image"], models()),
    Case("strength-zero", [*GEN, "--image", "a.png", "--strength", "0"], ["--strength: 0.0", "above 0"],
         models(image("a.png"))),
    Case("strength-above-one", [*GEN, "--image", "a.png", "--strength", "1.5"], ["--strength: 1.5", "at most 1"],
         models(image("a.png"))),
    Case("strength-nan", [*GEN, "--image", "a.png", "--strength", "nan"], ["--strength: nan"], models(image("a.png"))),
    Case("mask-blur-without-mask", [*GEN, "--image", "a.png", "--mask-blur", "3"], ["--mask-blur", "only with --mask"],
         models(image("a.png"))),
    Case("mask-blur-negative", [*GEN, "--image", "a.png", "--mask", "m.png", "--mask-blur", "-1"],
         ["--mask-blur: -1", "0 to 64"], models(image("a.png"), image("m.png", mode="L"))),
    Case("mask-another-size", [*GEN, "--image", "a.png", "--mask", "m.png"], ["--mask", "4x4", "8x8"],
         models(image("a.png"), image("m.png", (4, 4), "L"))),
    Case("mask-missing", [*GEN, "--image", "a.png", "--mask", "m.png"], ["--mask", "m.png does not exist"],
         models(image("a.png"))),
    Case("image-with-height-only", [*GEN, "--image", "a.png", "--height", "8"], ["--height and --width", "both"],
         models(image("a.png"))),
    Case("image-size-not-a-multiple", ["generate", "x", "--spec", "latent.json", "--image", "odd.png"],
         ["--image (its height", "multiple of 2"], models(image("odd.png", (8, 9)))),
    Case("image-with-from", ["generate", "--from", "a.png", "--image", "a.png"], ["--image", "not with --from"],
         models(image("a.png"))),
    Case("cfg-not-a-number", [*GEN, "--cfg", "lots"], ["--cfg", "invalid float"], models()),
    Case("cfg-infinite", [*GEN, "--cfg", "inf"], ["--cfg: inf", "finite"], models()),
    Case("out-dir-a-file", [*GEN, "--out-dir", "notes.txt"], ["--out-dir", "notes.txt is a file"],
         models(file("notes.txt"))),
    Case("control-image-missing", [*GEN, "--control-image", "edges.png"], ["--control-image", "edges.png does not exist"],
         models()),
    Case("control-image-without-controlnet", [*GEN, "--control-image", "edges.png"],
         ["--control-image", "no component of this pipeline takes 'control_image'"], models(image("edges.png"))),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_image_options_exit_2_naming_them(case, tmp_path, capsys, monkeypatch):
    check(case, tmp_path, capsys, monkeypatch)
