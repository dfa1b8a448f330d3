"""``sfumato generate --from`` replays a Stable Diffusion run (a diffusers folder and its
``sfumato convert`` output) bit for bit: a resolved spec survives its lock."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import sfumato
from sfumato.cli import main
from sfumato.component import ComponentSpec

pytest.importorskip("diffusers")


def replay_matches(source: str, tmp_path) -> None:
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    assert main(["generate", "a red circle", "--spec", source, "--steps", "2", "--height", "32", "--width", "32",
                 "--out", str(first), "--no-progress"]) == 0
    assert main(["generate", "--from", str(first), "--out", str(second), "--no-progress"]) == 0
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))


def test_a_diffusers_folder_run_replays(tiny_sd, tmp_path):
    replay_matches(str(tiny_sd), tmp_path)


def test_a_converted_folder_run_replays(tiny_sd, tmp_path):
    assert main(["convert", str(tiny_sd), "--out", str(tmp_path / "converted")]) == 0
    replay_matches(str(tmp_path / "converted" / "spec.toml"), tmp_path)


def test_no_spec_field_has_a_none_that_a_lock_would_lose():
    """TOML has no null and locks drop None values, so a field whose default is not None must not
    accept None as a different value: it would come back as the default on replay."""
    offenders = []

    def walk(model: type, where: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            args = getattr(annotation, "__args__", ())
            if type(None) in args and info.default is not None and not info.is_required():
                offenders.append(f"{where}.{name}")
            for arg in (annotation, *args):
                if isinstance(arg, type) and hasattr(arg, "model_fields"):
                    walk(arg, f"{where}.{name}")

    registry = sfumato.get_registry()
    for kind, entries in registry.components.items():
        for type_name, entry in entries.items():
            walk(entry.cls.Spec, f"{kind} {type_name!r}")
    assert not offenders, offenders
