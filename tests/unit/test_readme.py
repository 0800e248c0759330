"""The README's quick start is a promise: CI must run exactly its test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_quick_start_is_two_commands() -> None:
    start, test = _quick_start_commands()
    assert start.endswith("ivr dev")
    assert test.endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, test = _quick_start_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines


def test_procfile_serves_with_ivr_serve_and_a_worker() -> None:
    procfile = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    # One way to start production: `ivr serve` checks the settings and bounds gunicorn.
    assert procfile["web"].startswith("ivr serve") and "$PORT" in procfile["web"]
    # ivr/worker.py: rides out a Redis restart; several processes send texts side by side
    assert procfile["worker"] == "ivr worker --processes 4"
