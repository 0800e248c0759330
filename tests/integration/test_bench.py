"""The benchmark keeps working as the README runs it: a script, whatever directory it is run from,
every call ending as scripted against the real services it starts."""

import re
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


CHECKOUT = BENCH.parents[1]
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


def test_the_realistic_mode_reports_every_figure(tmp_path: Path) -> None:
    """`python -m bench realistic --quick`: the Procfile's processes, callers at a person's
    pace (times scaled down), two steps; the report carries each figure issue 9 asks for."""
    command = [sys.executable, "-m", "bench", "realistic", "--quick", "--p99-ms", "10000"]
    proc = subprocess.Popen(command, cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"the benchmark ran over {RUN_TIMEOUT:g} s:\n{out.decode()}{err.decode()}")
    output = out.decode() + err.decode()

    assert proc.returncode == 0, output
    assert "step 2/2: 4 callers" in output, output
    for kind in ("pin attempt", "passcode attempt", "code request", "hold poll", "code attempt"):
        assert re.search(rf"^  {kind} +[0-9]+ +{NUMBER} +{NUMBER} +0$", output, re.M), kind
    assert " 0 not as scripted" in output
    assert re.search(rf"SMS step-ups {NUMBER}/s, hold p50 {NUMBER} s, p99 {NUMBER} s", output)
    assert re.search(
        rf"web CPU {NUMBER} ms/webhook \(non-argon2 -?{NUMBER} ms\), {NUMBER} ms/call", output
    )
    assert re.search(rf"worker CPU {NUMBER} ms/text", output)
    assert re.search(rf"redis memory -?{NUMBER} B per live call", output)
    assert re.search(rf"load generator {NUMBER} of a core", output)
    assert re.search(rf"services' CPU {NUMBER} cores per 1,000 live calls", output)
    assert re.search(r"^held: 4 concurrent live calls", output, re.M), output
    assert re.search(rf"[0-9]+ cores would hold about {NUMBER} live calls", output)
    assert "concurrent realistic calls >= 2500" in output
