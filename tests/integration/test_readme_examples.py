"""Issue 9: the README's examples run as written. Its `ivr call` sessions and its service-code
curl are played, in a shell, against a real `ivr dev` in a folder laid out as the quick start
leaves it (`.venv/bin/ivr`); only the stack's port differs from the README's 8000."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_dev_restarts import ROOT, DevStack

README = (ROOT / "README.md").read_text()
README_URL = "http://127.0.0.1:8000"
CODE = re.compile(r"verification code is ([0-9]+)")


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def console_examples() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of each `$ ivr call` in "A call, played in a terminal"."""
    examples = []
    section = _section("A call, played in a terminal")
    for block in re.findall(r"```console\n(.+?)\n```", section, re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, *expected = chunk.splitlines()
            examples.append((command, expected))
    return examples


def service_code_example() -> str:
    (block,) = [
        b for b in re.findall(r"```sh\n(.+?)\n```", _section("Customers"), re.S) if "curl" in b
    ]
    return block


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; `...` alone skips any lines, a line ending in ` ...` matches its start."""
    at, gap = 0, False
    for line in expected:
        if line == "...":
            gap = True
            continue
        prefix = line.endswith(" ...")
        for j in range(at, len(actual) if gap else min(at + 1, len(actual))):
            if actual[j] == line or (prefix and actual[j].startswith(line[:-3])):
                at, gap = j + 1, False
                break
        else:
            return False
    return gap or at == len(actual)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, DevStack]]:
    path = tmp_path_factory.mktemp("readme")
    venv = Path(sys.executable).parent.parent
    assert (venv / "bin" / "ivr").is_file(), f"no ivr script in {venv}"
    (path / ".venv").symlink_to(venv)
    dev = DevStack(path)
    try:
        yield path, dev
    finally:
        assert dev.stop() == 0


def shell(folder: tuple[Path, DevStack], script: str) -> subprocess.CompletedProcess[str]:
    path, _ = folder
    base_url = json.loads((path / ".ivr" / "dev.json").read_text())["base_url"]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "TWILIO_AUTH_TOKEN", "IVR_API_TOKEN")
    }
    env["IVR_FLOWS_DIR"] = str(ROOT / "flows")
    return subprocess.run(
        ["bash", "-c", script.replace(README_URL, base_url)],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_the_readme_shows_the_calls_it_promises() -> None:
    commands = [command for command, _ in console_examples()]
    assert len(commands) == 4, commands  # PIN, two wrong answers, texted code, call back
    assert any("-i 3 -i 1" in command for command in commands)


@pytest.mark.parametrize(
    ("command", "expected"), console_examples(), ids=[c for c, _ in console_examples()]
)
def test_each_ivr_call_example_plays_as_written(
    folder: tuple[Path, DevStack], command: str, expected: list[str]
) -> None:
    played = shell(folder, command)
    assert played.returncode == 0, played.stdout + played.stderr
    readme_code, sent = CODE.search("\n".join(expected)), CODE.search(played.stdout)
    if readme_code:
        assert sent, played.stdout
        expected = [line.replace(readme_code.group(1), sent.group(1)) for line in expected]
    assert matches(expected, played.stdout.splitlines()), (
        "\n".join(expected) + "\n--- got ---\n" + played.stdout
    )


def test_the_service_code_curl_works_as_written(folder: tuple[Path, DevStack]) -> None:
    script = service_code_example()
    got = shell(folder, script)
    assert got.returncode == 0, got.stderr
    promised = json.loads(script.splitlines()[-1].removeprefix("# "))
    answer = json.loads(got.stdout)
    assert set(answer) == set(promised)
    assert answer["account"] == promised["account"]
    assert answer["expires_in"] == promised["expires_in"]
    assert re.fullmatch(r"[0-9]{8}", answer["code"])
