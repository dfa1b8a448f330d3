"""The "write your own scheduler" tutorial in docs/schedulers.md runs and passes the suite."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

import sfumato
from sfumato.testing import SchedulerConformance

DOC = Path(__file__).resolve().parents[2] / "docs" / "schedulers.md"


def tutorial_module() -> types.ModuleType:
    """Execute the python block that defines the plugin into a fresh module ``acme_samplers``."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    source = next(block for block in blocks if "register_components" in block)
    module = types.ModuleType("acme_samplers")
    sys.modules[module.__name__] = module  # torch.compile resolves globals through sys.modules
    exec(compile(source, f"{DOC}:acme_samplers", "exec", dont_inherit=True), module.__dict__)
    return module


ACME = tutorial_module()


class TestTutorialKarrasEuler(SchedulerConformance):
    spec = {"type": "acme.karras-euler", "steps": 8}
    plugin = ACME

    @pytest.fixture(autouse=True)
    def _importable(self, monkeypatch):
        # torch.compile resolves the step's globals through sys.modules; keep the module there
        # even if another test in this process replaced or dropped it.
        monkeypatch.setitem(sys.modules, ACME.__name__, ACME)


def test_tutorial_registers_through_a_fresh_registry():
    registry = sfumato.Registry(first_party=False, entry_points=False, local=None)
    info = registry.add_plugin("acme", ACME, "local")
    assert info.status == "ok", info.error
    assert info.provides == {"scheduler": ["acme.karras-euler"]}
    scheduler = registry.build("scheduler", {"type": "acme.karras-euler", "steps": 6})
    plan = scheduler.plan(sfumato.NoiseSchedule(), None)
    assert len(plan) == 6 and plan.sigmas[-1] == 0


def test_tutorial_matches_first_party_euler_with_karras_sigmas():
    """The 40-line plugin computes what `euler` with `sigmas = "karras"` does."""
    import sfumato_schedulers

    schedule = sfumato.NoiseSchedule()
    ours = ACME.KarrasEuler.from_spec({"steps": 10})
    first_party = sfumato_schedulers.SCHEDULERS_BY_TYPE["euler"].from_spec({"sigmas": "karras", "steps": 10})
    model = lambda x, t: schedule.to_prediction(0.9 * x, x, t)  # noqa: E731
    results = []
    for scheduler in (ours, first_party):
        plan = scheduler.plan(schedule)
        x = torch.ones(1, 2, 2, 2) * 3.0
        for i in range(len(plan)):
            x = scheduler.step(model, x, plan, i).x
        results.append(x)
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-4)
