"""The bad-input contract of every command: exit 2, one short message naming the culprit, no
traceback, and nothing written or changed that the user did not ask for.

Each ``test_*.py`` in this folder is a table of :class:`Case` rows run through :func:`check`.
The command runs in-process (``sfumato.cli.main``) in a scratch folder; ``SystemExit`` from
argparse counts as the command's exit code.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import sfumato
from sfumato.cli import main


@dataclass(frozen=True)
class Case:
    """One bad input.

    :param id: the test id (short, unique within its table).
    :param argv: the command line after ``sfumato``.
    :param needles: substrings the error message must contain (case-insensitive): what is wrong
        and where (the argument, file, table, field or plugin).
    :param setup: writes the files the case needs into the scratch folder (before the snapshot).
    :param code: the expected exit code (2 for bad input).
    :param may_write: paths (relative to the scratch folder) the command may create or change.
    """

    id: str
    argv: Sequence[str]
    needles: Sequence[str] = ()
    setup: Callable[[Path], None] | None = None
    code: int = 2
    may_write: Sequence[str] = field(default_factory=tuple)


def snapshot(root: Path) -> dict[str, str]:
    """Every file below ``root`` with the SHA-256 of its bytes (symlinks by their target)."""
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            else:
                try:
                    out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError:
                    out[rel] = "unreadable"
    return out


def run_cli(argv: Sequence[str], capsys) -> tuple[int, str, str]:
    """Run ``sfumato ARGV`` in-process; (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        sfumato.set_registry(None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check(case: Case, root: Path, capsys, monkeypatch) -> str:
    """Run ``case`` in the scratch folder ``root`` and assert the contract; returns stderr."""
    monkeypatch.chdir(root)
    if case.setup is not None:
        case.setup(root)
    before = snapshot(root)
    code, out, err = run_cli(case.argv, capsys)
    assert code == case.code, f"exit {code}, expected {case.code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err and "Traceback" not in out, f"a traceback leaked:\n{err}"
    message = err.strip()
    assert message or case.code == 0, "no message on stderr"
    lowered = message.lower()
    for needle in case.needles:
        assert needle.lower() in lowered, f"message does not name {needle!r}:\n{message}"
    after = snapshot(root)
    allowed = set(case.may_write)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)} - allowed
    assert not changed, f"files written or changed: {sorted(changed)}"
    return message
