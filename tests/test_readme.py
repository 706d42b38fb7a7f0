"""README stays true: the quickstart commands exist, its code is the tested quickstart."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_quickstart_has_two_commands_that_exist() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quickstart.strip().splitlines()]
    assert commands == ["scripts/demo", "scripts/test"]
    for command in commands:
        assert os.access(ROOT / command, os.X_OK), command


def test_ci_runs_the_readme_test_command() -> None:
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_readme_code_is_the_tested_quickstart() -> None:
    code = README.split("```python\n", 1)[1].split("```", 1)[0]
    assert code == (ROOT / "docs" / "quickstart_app.py").read_text()


def test_readme_links_exist() -> None:
    for part in README.split("](")[1:]:
        target = part.split(")", 1)[0]
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
