"""The web page of ``sfumato serve`` in a real headless Chromium: the form is built from the
request's JSON schema (a plugin's scheduler and its fields appear), a job is submitted from it,
its events are followed and its image shown; a refused request shows the field's error."""

from __future__ import annotations

import re
import shutil
import subprocess
from urllib.parse import urlencode

import pytest

from serve.serve_helpers import served

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt install chromium)")]


def rendered(url: str) -> str:
    """The page's DOM after its scripts ran (virtual time runs on once the network is idle)."""
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--virtual-time-budget=30000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_page_generates_with_a_plugin_scheduler(model_folder):
    with served(model_folder) as (_, base):
        query = {"prompt": "a red circle", "seed": "4", "scheduler.type": "test.noisy", "scheduler.steps": "3",
                 "go": "1"}
        dom = rendered(f"{base}/?{urlencode(query)}")
        assert 'data-status="done"' in dom, dom[-3000:]
        assert re.search(r'<option value="test.noisy"', dom) and 'name="scheduler.steps"' in dom
        image = re.search(r'<img src="(/v1/jobs/[0-9a-f]+/images/0)"[^>]*class="result"', dom)
        assert image, dom[-3000:]
        lock = httpx.get(f"{base}{image.group(1)}/lock").json()
        assert lock["spec"]["scheduler"] == {"type": "test.noisy", "steps": 3}
        assert lock["arguments"]["prompt"] == "a red circle" and lock["arguments"]["seed"] == 4


def test_the_page_shows_a_refused_field(model_folder):
    with served(model_folder) as (_, base):
        dom = rendered(f"{base}/?{urlencode({'prompt': 'a', 'steps': '0', 'go': '1'})}")
        assert 'data-status="refused"' in dom and "steps: Input should be greater than or equal to 1" in dom
