"""SECURITY 31: `ivr dev` never runs on half-started. A worker that dies is started again; a
redis-server that dies stops the whole stack with one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import redis
from rq import Queue, Worker

from ivr.processes import QUEUE
from ivr.store.server import find_free_port
from tests.integration.worker_jobs import mark

ROOT = Path(__file__).resolve().parents[2]


class DevStack:
    """`ivr dev` as a developer runs it, its output in a file."""

    def __init__(self, cwd: Path, port: int | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TWILIO_AUTH_TOKEN")}
        env["IVR_FLOWS_DIR"] = str(ROOT / "flows")
        env["PYTHONPATH"] = str(ROOT)  # the worker imports this suite's job functions
        env["PYTHONUNBUFFERED"] = "1"
        self.output_path = cwd / "ivr-dev.log"
        self._out: IO[str] = self.output_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ivr", "dev", "--port", str(port or find_free_port())],
            cwd=cwd,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        state_file = cwd / ".ivr" / "dev.json"

        def up() -> bool:  # its own state: a stale file from a killed stack may be there first
            return (
                state_file.exists() and json.loads(state_file.read_text())["pid"] == self.proc.pid
            )

        wait_for(up, 30, "ivr dev did not come up", self)
        self.redis = redis.Redis.from_url(json.loads(state_file.read_text())["redis_url"])

    def output(self) -> str:
        return self.output_path.read_text()

    def workers(self) -> list[Worker]:
        return Worker.all(connection=self.redis)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._out.close()


def wait_for(condition: Callable[[], object], timeout: float, what: str, dev: DevStack) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert dev.proc.poll() is None, f"{what}: ivr dev exited\n{dev.output()}"
        if condition():
            return
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s\n{dev.output()}"
        time.sleep(0.2)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevStack]:
    stack = DevStack(tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


def test_a_killed_worker_is_started_again_and_works(dev: DevStack) -> None:
    wait_for(dev.workers, 15, "the dev worker did not register", dev)
    (first,) = dev.workers()
    os.kill(first.pid, signal.SIGKILL)

    def replaced() -> bool:
        return any(w.name != first.name for w in dev.workers())

    wait_for(replaced, 20, "no new worker registered after the first was killed", dev)
    Queue(QUEUE, connection=dev.redis).enqueue(mark, "it:after-restart")
    wait_for(lambda: dev.redis.get("it:after-restart"), 15, "the new worker ran no job", dev)
    assert dev.proc.poll() is None
    assert "worker exited (code -9); restarting in 1 s" in dev.output()
    assert dev.stop() == 0


def test_redis_server_dying_stops_everything_in_one_line(dev: DevStack) -> None:
    wait_for(dev.workers, 15, "the dev worker did not register", dev)
    pid = dev.redis.info("server")["process_id"]
    os.kill(pid, signal.SIGKILL)
    code = dev.proc.wait(timeout=40)
    assert code == 1, dev.output()
    last = dev.output().strip().splitlines()[-1]
    assert last.startswith("Error: redis-server exited; stopping everything (its log: "), last
    assert "Traceback" not in dev.output()
