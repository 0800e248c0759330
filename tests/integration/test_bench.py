"""The benchmark keeps working as the README runs it: a script, whatever directory it is run from,
every call ending as scripted against the real services it starts."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "webhooks.py"
RUN_TIMEOUT = 300.0


def test_the_benchmark_plays_every_call_as_scripted(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCH), "--calls", "8", "--concurrency", "2"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()  # on SIGTERM the benchmark stops everything it started
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"the benchmark ran over {RUN_TIMEOUT:g} s:\n{out.decode()}{err.decode()}")
    output = out.decode() + err.decode()

    assert proc.returncode == 0, output
    assert "all 8 calls ended as scripted" in output
    assert "sms hold, choice sent -> code prompt (2 calls)" in output
    assert "every request kind's p99 is UNDER it" in output
