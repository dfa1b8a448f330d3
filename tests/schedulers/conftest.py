"""The conformance classes that configure a variant of a sampler (another sigma schedule, eta,
order or solver type) run their two expensive checks, ``torch.compile(fullgraph=True)`` and the
Gaussian convergence check, with ``-m slow`` (CI runs them): the default run makes both checks on
each sampler's plain configuration, and the variant's cheap contract tests stay in it."""

from __future__ import annotations

import pytest

EXPENSIVE = ("test_step_compiles_without_graph_breaks", "test_converges_to_the_exact_solution_on_gaussian_data")


def pytest_collection_modifyitems(items):
    for item in items:
        if getattr(item.cls, "variant", False) and item.originalname in EXPENSIVE:
            item.add_marker(pytest.mark.slow)
