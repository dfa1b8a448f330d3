"""``sfumato convert`` writes an SD checkpoint as spec.toml + safetensors that reload to the same
pipeline: identical images, with no converter involved."""

from __future__ import annotations

import tomllib

import pytest
import torch

import sfumato
from sfumato.cli import main

pytest.importorskip("diffusers")

from sd.tiny_sd import SIZE, tiny_architecture_overrides  # noqa: E402

PROMPT = "a red circle above a blue square"


def generate(pipe: sfumato.Pipeline) -> torch.Tensor:
    latents = torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(3))
    return pipe(PROMPT, latents=latents, steps=3, progress=False).decoded


def test_converted_diffusers_folder_reloads_to_identical_images(tiny_sd, tmp_path, capsys):
    assert main(["convert", str(tiny_sd), "--out", str(tmp_path / "out")]) == 0
    assert "spec.toml" in capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["autoencoder.safetensors", "denoiser.safetensors", "spec.toml", "text_encoder.safetensors",
                       "text_encoder.tokenizer"]
    spec = tomllib.loads((tmp_path / "out" / "spec.toml").read_text())
    assert spec["denoiser"]["weights"] == "denoiser.safetensors" and spec["scheduler"]["steps_offset"] == 1
    assert str(tiny_sd) not in (tmp_path / "out" / "spec.toml").read_text()  # nothing points back at the source
    converted, original = sfumato.load_pipeline(tmp_path / "out" / "spec.toml"), sfumato.load_pipeline(tiny_sd)
    assert without_paths(converted.spec.to_dict()) == without_paths(original.spec.to_dict())
    assert torch.equal(generate(converted), generate(original))


def without_paths(spec: dict) -> dict:
    return {table: {k: v for k, v in fields.items() if k not in ("weights", "tokenizer")}
            if isinstance(fields, dict) else fields for table, fields in spec.items()}


def test_converted_single_file_reloads_to_identical_images(tiny_sd, tiny_sd_file, tmp_path):
    overrides = tiny_architecture_overrides(tiny_sd)
    spec_path = sfumato_convert(tiny_sd_file, tmp_path, overrides)
    spec = tomllib.loads(spec_path.read_text())
    assert spec["text_encoder"]["tokenizer"] == "builtin:clip"  # nothing to carry: the vocabulary ships
    assert spec["denoiser"]["block_out_channels"] == [16, 16, 32, 32]
    converted, original = sfumato.load_pipeline(spec_path), sfumato.load_pipeline(tiny_sd_file, overrides)
    assert converted.text_encoder.text.config == original.text_encoder.text.config  # from the file's metadata
    assert torch.equal(generate(converted), generate(original))


def sfumato_convert(path, out, overrides):
    from sfumato.cli.convert_command import convert

    return convert(path, out, overrides)


def test_convert_reports_an_unrecognised_path(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["convert", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "out")]) == 2
    assert "no plugin recognises it" in capsys.readouterr().err
