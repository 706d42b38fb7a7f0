"""``python -m benchmarks`` still runs: three scenarios at their ``--quick`` sizes.

Figures are not asserted (a shared machine says nothing about them); the run must end
with a verdict for each guard of those scenarios, none of them ``ERROR``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmarks_print_a_verdict_per_guard() -> None:
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "signup",
        "confirm",
        "growth",
        "--quick",
        "--no-postgres",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    verdicts = done.stdout.split("\nGuards (", 1)[1].splitlines()[1:]
    assert [line.split(None, 1)[0] for line in verdicts].count("SKIP") == 1  # PostgreSQL
    assert len(verdicts) == 6, done.stdout
    assert all(line.split(None, 1)[0] in {"PASS", "FAIL", "SKIP"} for line in verdicts)
