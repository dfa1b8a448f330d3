"""The example third-party package (examples/sfumato-example-plugin), installed as CI installs it,
is discovered through its entry point and usable from a spec."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest
import torch

import sfumato
import sfumato_test_doubles
from sfumato_test_doubles import spec_dict


@pytest.fixture(scope="module", autouse=True)
def installed():
    try:
        importlib.metadata.distribution("sfumato-example-plugin")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("the example plugin is not installed: pip install -e examples/sfumato-example-plugin")


def test_plugins_json_lists_it_as_an_entry_point():
    out = subprocess.run([sys.executable, "-m", "sfumato", "plugins", "--json"], capture_output=True, text=True, check=True)
    example = {p["name"]: p for p in json.loads(out.stdout)}["example"]
    assert example["source"] == "entry-point" and example["status"] == "ok"
    assert example["version"] == "0.1.0"
    assert example["provides"] == {"guidance": ["example.apg"]}


def test_a_spec_uses_the_example_guidance():
    registry = sfumato.Registry(first_party=False, entry_points=True, local=None)
    registry.add_plugin("test", sfumato_test_doubles, "local")
    old = sfumato.set_registry(registry)
    try:
        torch.manual_seed(0)
        pipe = sfumato.load_pipeline(spec_dict(guidance=[{"type": "example.apg", "scale": 3.0}]))
        assert type(pipe.guidance[0]).__name__ == "AdaptiveProjectedGuidance"
        result = pipe("a red circle", seed=0)
        assert torch.isfinite(result.latents).all()
    finally:
        sfumato.set_registry(old)
