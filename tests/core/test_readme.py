"""README's test command is the one CI runs, and it starts with the two promised commands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    generate, tests = commands[0], commands[1]
    assert "torch==2.13.0" in generate and "sfumato generate" in generate
    assert "torch==2.13.0" in tests and "pytest" in tests
    assert readme.index(generate) < readme.index("## ")
    assert tests in (ROOT / ".ci" / "run").read_text()
