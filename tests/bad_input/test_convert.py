"""``sfumato convert``: every bad checkpoint or output folder exits 2 naming the problem, and
nothing is written (no half-converted folder) when it fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bad_input.harness import Case, check

pytest.importorskip("diffusers")

from sd.tiny_sd import write_tiny_sd  # noqa: E402

TINY: Path | None = None


@pytest.fixture(scope="module", autouse=True)
def tiny_folder(tmp_path_factory):
    global TINY
    TINY = write_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))
    yield TINY


def copy_tiny(edit=None):
    """A setup that copies the tiny SD folder to ./sd and applies ``edit(folder)``."""

    def setup(root: Path) -> None:
        shutil.copytree(TINY, root / "sd")
        if edit is not None:
            edit(root / "sd")

    return setup


def write(name: str, content: bytes | str):
    def setup(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def edit_index(change):
    def edit(folder: Path) -> None:
        index = json.loads((folder / "model_index.json").read_text())
        change(index)
        (folder / "model_index.json").write_text(json.dumps(index))

    return edit


def remove(relative: str):
    def edit(folder: Path) -> None:
        target = folder / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return edit


def both(*setups):
    def setup(root: Path) -> None:
        for s in setups:
            s(root)

    return setup


CASES = [
    Case("missing-path", ["convert", "nope", "--out", "out"], ["nope"]),
    Case("missing-out", ["convert", "x.safetensors"], ["--out"]),
    Case("text-file", ["convert", "notes.txt", "--out", "out"], ["notes.txt", "checkpoint"],
         setup=write("notes.txt", "hello")),
    Case("garbage-safetensors", ["convert", "x.safetensors", "--out", "out"], ["x.safetensors", "safetensors"],
         setup=write("x.safetensors", b"\x00\x01garbage" * 10)),
    Case("empty-safetensors", ["convert", "x.safetensors", "--out", "out"], ["x.safetensors"],
         setup=write("x.safetensors", b"")),
    Case("pickle-ckpt", ["convert", "model.ckpt", "--out", "out"], ["model.ckpt", "pickle"],
         setup=write("model.ckpt", b"PK\x03\x04 not really a zip")),
    Case("empty-folder", ["convert", "folder", "--out", "out"], ["folder"],
         setup=lambda root: (root / "folder").mkdir()),
    Case("malformed-model-index", ["convert", "sd", "--out", "out"], ["model_index.json", "malformed"],
         setup=copy_tiny(lambda f: (f / "model_index.json").write_text("{not json"))),
    Case("model-index-not-object", ["convert", "sd", "--out", "out"], ["model_index.json"],
         setup=copy_tiny(lambda f: (f / "model_index.json").write_text("[1, 2]"))),
    Case("sdxl-class", ["convert", "sd", "--out", "out"], ["StableDiffusionXLPipeline"],
         setup=copy_tiny(edit_index(lambda i: i.update(_class_name="StableDiffusionXLPipeline")))),
    Case("missing-unet-folder", ["convert", "sd", "--out", "out"], ["unet"], setup=copy_tiny(remove("unet"))),
    Case("missing-unet-weights", ["convert", "sd", "--out", "out"], ["unet", "diffusion_pytorch_model"],
         setup=copy_tiny(remove("unet/diffusion_pytorch_model.safetensors"))),
    Case("missing-scheduler-config", ["convert", "sd", "--out", "out"], ["scheduler_config.json"],
         setup=copy_tiny(remove("scheduler/scheduler_config.json"))),
    Case("malformed-unet-config", ["convert", "sd", "--out", "out"], ["unet", "config.json"],
         setup=copy_tiny(lambda f: (f / "unet" / "config.json").write_text("{"))),
    Case("truncated-vae-weights", ["convert", "sd", "--out", "out"], ["vae", "safetensors"],
         setup=copy_tiny(lambda f: (f / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(
             (f / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()[:200]))),
    Case("wrong-component-class", ["convert", "sd", "--out", "out"], ["unet", "UNet2DModel"],
         setup=copy_tiny(edit_index(lambda i: i.update(unet=["diffusers", "UNet2DModel"])))),
    Case("out-is-a-file", ["convert", "sd", "--out", "taken"], ["taken", "not a folder"],
         setup=both(copy_tiny(), write("taken", "keep me"))),
    Case("out-holds-a-conversion", ["convert", "sd", "--out", "done"], ["done", "--overwrite"],
         setup=both(copy_tiny(), write("done/spec.toml", 'task = "text-to-image"\n'))),
    Case("out-inside-the-source", ["convert", "sd", "--out", "sd/converted"], ["inside"],
         setup=copy_tiny()),
    Case("bad-set", ["convert", "sd", "--out", "out", "--set", "scheduler.steps=-3"], ["scheduler", "steps"],
         setup=copy_tiny()),
    Case("set-unknown-table", ["convert", "sd", "--out", "out", "--set", "nonsense.x=1"], ["nonsense"],
         setup=copy_tiny()),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_convert_bad_input(case, tmp_path, capsys, monkeypatch):
    check(case, tmp_path, capsys, monkeypatch)
    assert not (tmp_path / "out").exists(), "a failed conversion left an output folder"


def test_overwrite_replaces_an_earlier_conversion(tmp_path, capsys, monkeypatch):
    from sfumato.cli import main

    monkeypatch.chdir(tmp_path)
    copy_tiny()(tmp_path)
    assert main(["convert", "sd", "--out", "done"]) == 0
    first = (tmp_path / "done" / "spec.toml").read_text()
    assert main(["convert", "sd", "--out", "done"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", "sd", "--out", "done", "--overwrite"]) == 0
    assert (tmp_path / "done" / "spec.toml").read_text() == first
