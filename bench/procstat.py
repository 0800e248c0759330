"""CPU time of the services, from /proc: a process and all its descendants, the reaped ones
included (a forked rq work horse is counted in its parent's cutime/cstime once reaped)."""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, own + reaped children's CPU seconds) of `pid`, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / TICKS


def _stats() -> dict[int, tuple[int, float]]:
    """`_stat` of every process there is."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(ValueError):
                found = _stat(int(entry.name))
                if found is not None:
                    stats[int(entry.name)] = found
    return stats


def children(parent: int) -> list[int]:
    """The live processes whose parent is `parent` (a gunicorn master's workers)."""
    return [pid for pid, (ppid, _) in _stats().items() if ppid == parent]


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and every live descendant (and, through them, the reaped ones)."""
    stats = _stats()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        kids.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(kids.get(pid, ()))
    return total


def own_cpu() -> float:
    """This process's CPU seconds, every thread: the load generator's own cost."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
