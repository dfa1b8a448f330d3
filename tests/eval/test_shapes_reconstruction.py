"""``sfumato eval shapes-reconstruction``: the detector on scenes through a model's autoencoder."""

from __future__ import annotations

import json

import pytest

import sfumato
from sfumato.cli import main
from sfumato_data.reconstruction_eval import reconstruction_report


def test_a_lossless_autoencoder_keeps_every_scene_readable():
    report = reconstruction_report(sfumato.build("autoencoder", {"type": "identity"}), count=12)
    assert report["drawn"] == {"exact_scenes": 1.0, "objects_found": 1.0}
    assert report["reconstructed"] == report["drawn"]


def test_the_shapes_vae_loses_some_scenes_and_the_command_writes_json(tmp_path, capsys):
    out = tmp_path / "ceiling.json"
    assert main(["eval", "shapes-reconstruction", "--model", "shapes", "--count", "24", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "shapes-reconstruction" and report["scenes"] == 24
    assert report["drawn"]["exact_scenes"] == 1.0
    assert 0.0 < report["reconstructed"]["objects_found"] < 1.0  # a 4x-downscaling VAE is not lossless here
    assert "reconstructed" in capsys.readouterr().out


def test_a_model_without_an_autoencoder_is_refused(tmp_path, capsys):
    spec = tmp_path / "pixels.toml"
    spec.write_text('[denoiser]\ntype = "unet"\nblock_out_channels = [8, 16]\nattention = [false, false]\n'
                    'mid_attention = false\nnorm_num_groups = 4\n')
    assert main(["eval", "shapes-reconstruction", "--spec", str(spec)]) != 0
    assert "has no [autoencoder] table" in capsys.readouterr().err
