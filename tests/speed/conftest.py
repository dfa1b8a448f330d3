"""Fixtures for the speedup tests: the built-in pipelines, loaded once."""

from __future__ import annotations

import pytest

import sfumato


@pytest.fixture(scope="session")
def shapes():
    return sfumato.load_pipeline("shapes")


@pytest.fixture(scope="session")
def digits_flow():
    return sfumato.load_pipeline("digits-flow")
