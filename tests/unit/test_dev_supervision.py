"""`ivr dev` keeps its children running: one that dies is started again, backing off, and one
that keeps dying stops the stack with one line. Real child processes, a fast backoff."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from redis.backoff import ExponentialBackoff

from ivr.dev.supervise import MAX_RESTARTS, Child, supervise
from ivr.errors import IvrError

FAST = ExponentialBackoff(cap=0.02, base=0.005)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_keeps_dying_stops_everything_in_one_line() -> None:
    child = Child("worker", python("raise SystemExit(3)"), dict(os.environ))
    said: list[str] = []
    child.start()
    try:
        with pytest.raises(IvrError) as info:
            supervise([child], None, said.append, threading.Event(), backoff=FAST, poll=0.01)
    finally:
        child.stop()
    assert str(info.value) == (
        f"worker exited (code 3) {MAX_RESTARTS + 1} times in a row; "
        "stopping everything; see its output above"
    )
    assert len(said) == MAX_RESTARTS
    assert all(line.startswith("worker exited (code 3); restarting in ") for line in said)


def test_a_child_that_died_once_is_started_again_and_kept(tmp_path: Path) -> None:
    # Dies the first time; the second time it says so and stays up.
    first, second = tmp_path / "first", tmp_path / "second"
    code = (
        "import pathlib, sys, time\n"
        f"first, second = pathlib.Path({str(first)!r}), pathlib.Path({str(second)!r})\n"
        "if not first.exists():\n"
        "    first.touch(); sys.exit(3)\n"
        "second.touch(); time.sleep(60)\n"
    )
    child = Child("web", python(code), dict(os.environ))
    said: list[str] = []
    stop = threading.Event()

    def stop_once_restarted() -> None:
        while not second.exists() and not stop.wait(0.01):
            pass
        stop.set()

    watcher = threading.Thread(target=stop_once_restarted, daemon=True)
    child.start()
    watcher.start()
    try:
        supervise([child], None, said.append, stop, backoff=FAST, poll=0.01)
        assert not child.exited()
    finally:
        stop.set()
        child.stop()
        watcher.join()
    assert said == ["web exited (code 3); restarting in 0.01 s"]
