"""`ivr dev`'s guardian: stops what `ivr dev` started when `ivr dev` itself dies, even by SIGKILL.

Nothing can run in a process killed outright, and prctl's PR_SET_PDEATHSIG is not enough: it is
Linux only, it does not reach grandchildren (gunicorn's workers, rq's scheduler and work horse),
and it would stop redis-server at the same instant as the worker, whose warm shutdown then waits
for Redis forever. So `ivr dev` first starts this small process, in a session of its own, and
tells it on a pipe each process group it starts ("+ PGID", "+last PGID" for redis-server) and
each one it has stopped and reaped ("- PGID"); its clean exit writes "done". The pipe's end
without "done" means `ivr dev` died: the guardian stops the web server and worker (SIGTERM to
each group's leader, then SIGKILL to what is left of the group after a grace), then
redis-server the same way, so the worker still shuts down against a live Redis.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable

GRACE = 10.0


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for init to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_groups(pgids: Iterable[int], grace: float = GRACE) -> None:
    pgids = list(pgids)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pgid, signal.SIGTERM)  # the leader: gunicorn's master, `ivr worker`, redis
    deadline = time.monotonic() + grace
    while any(_running(pgid) for pgid in pgids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):  # a closed terminal or Ctrl-C is `ivr dev`'s
        signal.signal(sig, signal.SIG_IGN)
    first: set[int] = set()
    last: set[int] = set()
    for line in sys.stdin:
        op, _, arg = line.strip().partition(" ")
        if op == "done":
            return
        if not arg.isdigit():
            continue
        pgid = int(arg)
        if op == "+":
            first.add(pgid)
        elif op == "+last":
            last.add(pgid)
        elif op == "-":
            first.discard(pgid)
            last.discard(pgid)
    if first or last:
        with contextlib.suppress(OSError):
            print("ivr dev is gone; stopping what it started", file=sys.stderr, flush=True)
    stop_groups(first)
    stop_groups(last)


if __name__ == "__main__":
    main()
