"""The harness itself fails on what it must catch (a traceback, a wrong code, a written file)."""

from __future__ import annotations

import pytest

from bad_input.harness import Case, check


def test_harness_accepts_a_clean_exit_2(tmp_path, capsys, monkeypatch):
    message = check(Case("missing-spec", ["validate", "nope.toml"], needles=["nope.toml"]), tmp_path, capsys, monkeypatch)
    assert "not found" in message


def test_harness_rejects_a_written_file(tmp_path, capsys, monkeypatch):
    def setup(root):
        (root / "spec.toml").write_text('task = "text-to-image"\n')

    case = Case("fill-writes", ["fill", "spec.toml", "--out", "filled.toml"], setup=setup, code=0)
    with pytest.raises(AssertionError, match="files written"):
        check(case, tmp_path, capsys, monkeypatch)


def test_harness_rejects_a_wrong_exit_code(tmp_path, capsys, monkeypatch):
    with pytest.raises(AssertionError, match="exit 2, expected 0"):
        check(Case("x", ["validate", "nope.toml"], code=0), tmp_path, capsys, monkeypatch)
