"""README stays true: every setting in its table, the quickstart commands exist."""

from __future__ import annotations

import os
from pathlib import Path

from flask_confirm_mail.settings import OPTIONS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    table_rows = [line for line in README.splitlines() if line.startswith("| `CONFIRM_MAIL_")]
    documented = [row.split("`")[1] for row in table_rows]
    assert documented == [option.key for option in OPTIONS]


def test_quickstart_has_two_commands_that_exist() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quickstart.strip().splitlines()]
    assert commands == ["scripts/demo", "scripts/test"]
    for command in commands:
        assert os.access(ROOT / command, os.X_OK), command


def test_ci_runs_the_readme_test_command() -> None:
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_every_mailer_variable_is_documented() -> None:
    from flask_confirm_mail.mailer.settings import ENV_DEFAULTS

    documented = [line.split("`")[1] for line in README.splitlines() if line.startswith("| `")]
    assert set(ENV_DEFAULTS) <= set(documented)
