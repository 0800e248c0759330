"""How this project starts its processes, in one place for `ivr serve`, `ivr dev`, the tests
and the benchmark: the web server is gunicorn on the app factory, a worker is rq on our queue."""

from __future__ import annotations

import sys
from functools import cache

WSGI_APP = "ivr.wsgi:application()"
QUEUE = "ivr"


@cache
def _no_control_socket() -> tuple[str, ...]:
    # gunicorn >= 25.1 opens a control socket shared by every gunicorn of the user; two servers
    # on one machine (tests, dev beside prod) must not fight over it.
    from gunicorn.config import KNOWN_SETTINGS

    known = any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)
    return ("--no-control-socket",) if known else ()


# Request line, header count and header size gunicorn accepts before the app sees anything; a
# Twilio webhook's request line is our short action URL, and it sends about a dozen headers.
# Bodies are bounded by the app (ivr.security.MAX_BODY_BYTES).
_REQUEST_LIMITS = (
    "--limit-request-line", "2048",
    "--limit-request-fields", "50",
    "--limit-request-field_size", "4096",
)  # fmt: skip


#: Threads per gunicorn worker (the gthread worker class). An argon2 check (PIN, passcode)
#: takes tens of ms of CPU with the GIL released; in a sync worker it holds every webhook
#: queued behind it, here the other threads answer them meanwhile. argon2 is CPU-bound, so
#: more threads than this buys no PIN throughput on two cores, only argon2 memory (19 MiB
#: each at the default cost) and contention on the GIL for the cheap requests.
WEB_THREADS = 4
WORKER_CLASS = "gthread"


def web_command(bind: str, workers: int, *options: str, threads: int = WEB_THREADS) -> list[str]:
    """gunicorn on the app factory, bounded, and trusting no forwarded header itself.

    gunicorn believes X-Forwarded-Proto from 127.0.0.1 by default (and from whatever
    $FORWARDED_ALLOW_IPS says), which would change the URL signatures are checked against
    whatever IVR_PROXY_HOPS says; with no allowed address, only the app's ProxyFix, set by
    IVR_PROXY_HOPS, reads those headers.
    """
    return [
        sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(workers),
        "--worker-class", WORKER_CLASS, "--threads", str(threads),
        "--forwarded-allow-ips", "", *_REQUEST_LIMITS,
        "--config", "python:ivr.gunicorn_conf",  # metrics' multiprocess dir, JSON logs
        *_no_control_socket(), *options, WSGI_APP,
    ]  # fmt: skip


def worker_command(redis_url: str, *options: str) -> list[str]:
    """`ivr worker`, the Procfile's worker (see ivr/worker.py for why not plain `rq worker`)."""
    return [sys.executable, "-m", "ivr", "worker", "--url", redis_url, *options]
