"""The children of `ivr dev` (web server, worker), each in its own process group, and the loop
that starts again one that dies, backing off, until a stop signal."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.backoff import AbstractBackoff, ExponentialBackoff

from ivr.dev import Say
from ivr.dev.guardian import Guardian
from ivr.errors import IvrError
from ivr.store.server import RedisServer

#: Waits between restarts of a child that keeps dying: 1, 2, 4, 8 s.
RESTART_BACKOFF = ExponentialBackoff(cap=8.0, base=0.5)
#: Restarts in a row before giving up; a child that then ran STABLE_AFTER seconds starts afresh.
MAX_RESTARTS = 4
STABLE_AFTER = 60.0


@dataclass
class Child:
    """One process of the stack, in its own process group: Ctrl-C reaches `ivr dev` alone,
    which stops the children in order, and what a dead child leaves behind (the worker's
    scheduler process) goes with it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    stop_timeout: float = field(default=10.0, repr=False)
    guardian: Guardian | None = field(default=None, repr=False)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, process_group=0)
        if self.guardian is not None:
            self.guardian.watch(self.proc.pid)
        self.started_at = time.monotonic()
        self.restart_at = None

    def exited(self) -> bool:
        """Whether the child has exited, without reaping it: until it is reaped its pid, and so
        its process group id, cannot belong to anyone else."""
        if self.proc is None or self.proc.returncode is not None:
            return True
        try:
            return (
                os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            )
        except ChildProcessError:
            return True

    def stop(self) -> int | None:
        """Stop the child (SIGTERM, SIGKILL after `stop_timeout`) and whatever it left behind;
        its exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            if not self.exited():
                proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + self.stop_timeout
                while not self.exited() and time.monotonic() < deadline:
                    time.sleep(0.05)
            leftovers = signal.SIGTERM if self.exited() else signal.SIGKILL
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, leftovers)
        self.proc = None
        code = proc.wait()
        if self.guardian is not None:
            self.guardian.forget(proc.pid)
        return code


def stop_on_signals() -> threading.Event:
    """Set by Ctrl-C, SIGTERM or the terminal closing (SIGHUP, which would otherwise end
    `ivr dev` alone and leave its children running). Handled explicitly: a shell that starts
    `ivr dev` in the background leaves SIGINT ignored, which would make Ctrl-C-style stops do
    nothing."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def supervise(
    children: list[Child],
    redis_server: RedisServer | None,
    say: Say,
    stop: threading.Event,
    backoff: AbstractBackoff = RESTART_BACKOFF,
    poll: float = 0.5,
    watch: Callable[[], None] = lambda: None,
) -> None:
    """Until `stop`, start again a child that died; give up with one line when one keeps dying,
    or when redis-server dies (nothing works without it, and its data is its own business).
    `watch` is called on every turn (the flow file's watcher)."""
    while not stop.wait(poll):
        if redis_server is not None and redis_server.pid is None:
            raise IvrError(
                f"redis-server exited; stopping everything (its log: {redis_server.log_path})"
            )
        for child in children:
            _keep_alive(child, say, backoff)
        watch()


def _keep_alive(child: Child, say: Say, backoff: AbstractBackoff) -> None:
    now = time.monotonic()
    if child.restart_at is not None:
        if now >= child.restart_at:
            child.start()
        return
    if not child.exited():
        return
    code = child.stop()  # reaps it, and stops what it left behind
    if now - child.started_at >= STABLE_AFTER:
        child.restarts = 0
    if child.restarts >= MAX_RESTARTS:
        raise IvrError(
            f"{child.name} exited (code {code}) {child.restarts + 1} times in a row; "
            "stopping everything; see its output above"
        )
    child.restarts += 1
    delay = backoff.compute(child.restarts)
    child.restart_at = now + delay
    say(f"{child.name} exited (code {code}); restarting in {delay:g} s")
