"""How this project starts its processes, in one place for `ivr serve`, `ivr dev`, the tests
and the benchmark: the web server is gunicorn on the app factory, a worker is rq on our queue."""

from __future__ import annotations

import sys
from functools import cache

WSGI_APP = "ivr.app:create_app()"
QUEUE = "ivr"


@cache
def _no_control_socket() -> tuple[str, ...]:
    # gunicorn >= 25.1 opens a control socket shared by every gunicorn of the user; two servers
    # on one machine (tests, dev beside prod) must not fight over it.
    from gunicorn.config import KNOWN_SETTINGS

    known = any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)
    return ("--no-control-socket",) if known else ()


def web_command(bind: str, workers: int, *options: str) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(workers),
        *_no_control_socket(), *options, WSGI_APP,
    ]  # fmt: skip


def worker_command(redis_url: str, *options: str) -> list[str]:
    """`ivr worker`, the Procfile's worker (see ivr/worker.py for why not plain `rq worker`)."""
    return [sys.executable, "-m", "ivr", "worker", "--url", redis_url, *options]
