"""``sfumato generate --sampler NAME [--schedule NAME]``: a sampler by the name other tools give
it, resolved through the registry's sampler names into ``--set scheduler.*`` overrides."""

from __future__ import annotations

import pytest

import sfumato
from sfumato.cli import main
from sfumato.cli.generate_command import sampler_overrides
from sfumato.outputs import read_lock


@pytest.fixture(autouse=True)
def default_registry():
    sfumato.set_registry(None)
    yield
    sfumato.set_registry(None)


def test_webui_and_comfyui_names_become_scheduler_overrides():
    assert sampler_overrides("DPM++ 2M Karras", None) == ['scheduler.type="dpmpp-2m"', 'scheduler.sigmas="karras"']
    assert sampler_overrides("dpmpp_2m", "karras") == ['scheduler.type="dpmpp-2m"', 'scheduler.sigmas="karras"']
    with pytest.raises(sfumato.SpecError, match="--schedule"):
        sampler_overrides(None, "karras")


def test_generate_records_the_sampler_it_was_given(tmp_path, capsys):
    out = tmp_path / "a.png"
    assert main(["generate", "a red circle", "--sampler", "Euler a", "--steps", "2", "--out", str(out),
                 "--no-progress"]) == 0, capsys.readouterr().err
    assert read_lock(out)["spec"]["scheduler"]["type"] == "euler-ancestral"
    assert main(["generate", "x", "--sampler", "no such sampler", "--out", str(tmp_path / "b.png")]) == 2
    assert "unknown sampler name" in capsys.readouterr().err
