"""``sfumato generate`` writes a PNG carrying its lock, and ``--from`` replays it bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import sfumato
from sfumato.cli import main
from sfumato.outputs import read_lock

import sfumato_test_doubles as doubles_module

DOUBLES = doubles_module.__file__

SPEC = """
task = "test.generate"

[text_encoder]
type = "test.chars"
weights = "chars.safetensors"

[denoiser]
type = "test.linear"
weights = "linear.safetensors"

[diffusion]
betas = "linear"
beta_start = 0.0001
beta_end = 0.02

[scheduler]
type = "test.noisy"
steps = 4

[[guidance]]
type = "test.cfg"
scale = 2.0
"""


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    (tmp_path / "registry.toml").write_text(f'[plugins]\ntest = "{DOUBLES}"\n')
    monkeypatch.setenv("SFUMATO_REGISTRY", "registry.toml")
    torch.manual_seed(0)
    encoder = doubles_module.CharEncoder.from_spec({})
    denoiser = doubles_module.LinearDenoiser.from_spec({})
    with torch.no_grad():
        denoiser.proj.weight.mul_(0.1)
    sfumato.save_weights(encoder.state_dict(), tmp_path / "chars.safetensors")
    sfumato.save_weights(denoiser.state_dict(), tmp_path / "linear.safetensors")
    (tmp_path / "spec.toml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sfumato.set_registry(None)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_generate_writes_a_png_with_its_lock_and_replays_it(model_dir, capsys):
    code = main(["generate", "a red circle", "--spec", "spec.toml", "--seed", "5", "--out", "a.png", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    lock = read_lock("a.png")
    assert lock["arguments"]["prompt"] == "a red circle" and lock["arguments"]["seed"] == 5
    assert lock["spec"]["scheduler"]["type"] == "test.noisy"
    assert len(lock["weights"]) == 2 and all(len(h) == 64 for h in lock["weights"].values())
    assert lock["plugins"]["test"] is None or isinstance(lock["plugins"]["test"], str)

    assert main(["generate", "--from", "a.png", "--out", "b.png", "--no-progress"]) == 0
    assert np.array_equal(pixels("a.png"), pixels("b.png"))
    assert main(["generate", "a red circle", "--spec", "spec.toml", "--seed", "6", "--out", "c.png", "--no-progress"]) == 0
    assert not np.array_equal(pixels("a.png"), pixels("c.png"))


def test_several_images_make_a_grid(model_dir):
    assert main(["generate", "x", "--spec", "spec.toml", "--num-images", "3", "--out", "grid.png", "--no-progress"]) == 0
    assert Image.open("grid.png").size == (24, 8)


def test_replay_refuses_changed_weights(model_dir, capsys):
    main(["generate", "x", "--spec", "spec.toml", "--out", "a.png", "--no-progress"])
    weights = model_dir / "linear.safetensors"
    state = sfumato.load_weights(weights)
    state["proj.bias"] += 1
    sfumato.save_weights(state, weights)
    assert main(["generate", "--from", "a.png"]) == 2
    assert "changed" in capsys.readouterr().err


def test_from_an_image_without_a_lock_is_a_clear_error(model_dir, capsys):
    Image.new("RGB", (4, 4)).save("plain.png")
    assert main(["generate", "--from", "plain.png"]) == 2
    assert "has no sfumato lock" in capsys.readouterr().err


def test_unknown_model_lists_choices(model_dir, capsys):
    assert main(["generate", "x", "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
