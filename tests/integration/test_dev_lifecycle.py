"""Issue 9: one `ivr dev` per folder, and nothing it started outlives it, however it ends.

Each test runs `ivr dev` as a developer does (tests/integration/test_dev_restarts.py's DevStack)
and checks its processes by pid, from /proc: redis-server, gunicorn's master and workers, the rq
worker and its scheduler.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.store.server import find_free_port
from tests.integration.test_dev_restarts import ROOT, DevStack, wait_for


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TWILIO_AUTH_TOKEN")}
    env["IVR_FLOWS_DIR"] = str(ROOT / "flows")
    env.pop("IVR_API_TOKEN", None)
    return env


def ivr(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ivr", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(pid: int) -> set[int]:
    parents = _parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: set[int], timeout: float = 20) -> set[int]:
    deadline = time.monotonic() + timeout
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return {p for p in pids if running(p)}


def stack_pids(dev: DevStack) -> set[int]:
    """Every process of the running stack, once the worker has started its scheduler."""
    wait_for(dev.workers, 20, "the dev worker did not register", dev)
    wait_for(lambda: len(descendants(dev.proc.pid)) >= 7, 20, "not all processes started", dev)
    return descendants(dev.proc.pid)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevStack]:
    stack = DevStack(tmp_path)
    try:
        yield stack
    finally:
        stack.stop()
        for pid in descendants(stack.proc.pid):
            os.kill(pid, signal.SIGKILL)


def _base_url(dev_dir: Path) -> str:
    return str(json.loads((dev_dir / ".ivr" / "dev.json").read_text())["base_url"])


def test_a_second_ivr_dev_in_the_folder_is_refused_with_the_first_ones_address(
    dev: DevStack, tmp_path: Path
) -> None:
    base_url = _base_url(tmp_path)
    second = ivr(tmp_path, "dev", "--port", str(find_free_port()))
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"answering at {base_url}/voice" in second.stderr
    assert f"(pid {dev.proc.pid})" in second.stderr
    assert "redis-server started" not in second.stdout  # refused before anything started
    # The first one's state is untouched: the next commands still find the running stack.
    env = ivr(tmp_path, "dev", "env")
    assert env.returncode == 0 and f"at {base_url}" in env.stdout, env.stderr
    shown = ivr(tmp_path, "customers", "show", "12345678")
    assert shown.returncode == 0, shown.stderr


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_each_stop_signal_leaves_no_process_behind(dev: DevStack, sig: signal.Signals) -> None:
    pids = stack_pids(dev)
    dev.proc.send_signal(sig)
    assert dev.proc.wait(timeout=40) == 0, dev.output()
    assert wait_gone(pids) == set(), dev.output()


def test_ivr_dev_killed_outright_takes_its_stack_with_it_and_the_next_one_starts_clean(
    dev: DevStack, tmp_path: Path
) -> None:
    pids = stack_pids(dev)
    port = _base_url(tmp_path).rsplit(":", 1)[1]
    dev.proc.kill()
    dev.proc.wait(timeout=10)
    assert wait_gone(pids) == set(), dev.output()
    assert (tmp_path / ".ivr" / "dev.json").exists()  # nobody could remove it: it is stale
    call = ivr(tmp_path, "call", "-i", "1")
    assert call.returncode == 1 and "no running `ivr dev` found" in call.stderr
    assert ivr(tmp_path, "dev", "env").returncode == 1

    again = DevStack(tmp_path, port=int(port))
    try:
        assert f"left by an `ivr dev` that did not stop cleanly (pid {dev.proc.pid})" in (
            again.output()
        )
        played = ivr(tmp_path, "call", "-i", "12345678#", "-i", "1", "-i", "583920#", "-i", "1")
        assert played.returncode == 0, played.stdout + played.stderr
        assert "-> enqueued in queue 'balances'" in played.stdout
    finally:
        assert again.stop() == 0


def test_a_killed_web_server_is_replaced_and_answers_again(dev: DevStack, tmp_path: Path) -> None:
    """gunicorn's workers outlive a SIGKILLed master and hold the port; the restart ends them."""
    stack_pids(dev)
    port = int(_base_url(tmp_path).rsplit(":", 1)[1])
    (master,) = {
        p for p in descendants(dev.proc.pid) if "gunicorn" in Path(f"/proc/{p}/cmdline").read_text()
    } & set(_children(dev.proc.pid))
    workers = descendants(master)
    os.kill(master, signal.SIGKILL)
    wait_for(lambda: "web exited (code -9); restarting in 1 s" in dev.output(), 10, "", dev)
    assert wait_gone(workers) == set()

    def answers() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(answers, 20, "the new web server did not listen", dev)
    played = ivr(tmp_path, "call", "-i", "12345678#", "-i", "1", "-i", "583920#", "-i", "1")
    assert played.returncode == 0, played.stdout + played.stderr


def test_redis_server_dying_stops_every_other_process(dev: DevStack) -> None:
    pids = stack_pids(dev)
    os.kill(dev.redis.info("server")["process_id"], signal.SIGKILL)
    assert dev.proc.wait(timeout=40) == 1, dev.output()
    assert wait_gone(pids) == set(), dev.output()


def test_a_port_in_use_is_one_line_with_a_hint(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ivr(tmp_path, "dev", "--port", str(port))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: port {port} is already in use by another program"), line
    assert line.endswith(f"ivr dev --port {port + 1}"), line
    assert "redis-server started" not in result.stdout


def test_dev_env_exports_what_curl_needs_for_a_service_code(dev: DevStack, tmp_path: Path) -> None:
    base_url = _base_url(tmp_path)
    script = (
        f'eval "$({sys.executable} -m ivr dev env)" && '
        f"curl -s -X POST {base_url}/api/service-codes "
        '-H "Authorization: Bearer $IVR_API_TOKEN" -H "Content-Type: application/json" '
        '-d \'{"account": "12345678"}\''
    )
    out = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["account"] == "12345678" and len(answer["code"]) == 8


def test_ivr_call_names_the_answers_left_when_the_call_ends(dev: DevStack, tmp_path: Path) -> None:
    """It used to wait 15 s for a call back nobody promised, then blame the worker."""
    played = ivr(
        tmp_path, "call", "-i", "12345678#", "-i", "1", "-i", "583920#", "-i", "1", "-i", "1",
        "-i", "say:blue sky",
    )  # fmt: skip
    assert played.returncode == 1
    assert "-> enqueued in queue 'balances'" in played.stdout
    assert "waiting for a call back" not in played.stdout
    assert played.stderr.strip() == (
        "Error: the call ended with 2 scripted answers left unused: -i 1 -i 'say:blue sky'"
    )


def test_a_call_back_without_an_answer_for_it_says_what_to_add(
    dev: DevStack, tmp_path: Path
) -> None:
    answers = ["-i", "12345678#", "-i", "1", "-i", "583920#", "-i", "2", "-i", "3"]
    played = ivr(tmp_path, "call", *answers)
    assert played.returncode == 0, played.stderr
    assert played.stdout.strip().splitlines()[-1] == (
        "(the IVR calls you back; add an answer for that call, e.g. -i 1)"
    )


def _children(pid: int) -> list[int]:
    return [child for child, parent in _parents().items() if parent == pid]
