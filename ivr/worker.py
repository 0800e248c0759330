"""The rq worker as `ivr worker` (and so the Procfile, `ivr dev` and the tests) runs it.

rq's work loop quits on the first Redis error it does not expect (one while a job runs, or in
its scheduler process), and nothing brings it back: every later code send then times out. So
the worker's Redis client carries redis-py's own retry policy: every command, in the worker, its
scheduler process and each job's work horse, waits out a Redis restart or failover of up to
`OUTAGE_BUDGET` seconds and carries on where it was. Longer outages are a supervisor's business:
the worker then exits non-zero, and the Procfile's platform or `ivr dev` starts it again.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry
from rq import Worker

from ivr.errors import IvrError
from ivr.processes import QUEUE

# 0.2, 0.4, 0.8, 1.6, then 2 s between tries: a restart is noticed within 2 s of Redis answering.
_BACKOFF = ExponentialBackoff(cap=2.0, base=0.1)
_RETRIES = 18
OUTAGE_BUDGET = sum(_BACKOFF.compute(n) for n in range(1, _RETRIES + 1))  # about 31 s


def connect(url: str) -> Redis:
    """A client that rides out a Redis restart; its pool settings reach the scheduler process
    and the work horses, which rq builds from them; TLS options as every process has them."""
    from ivr.runtime import connect_redis  # ivr.runtime imports this module's OUTAGE_BUDGET

    return connect_redis(
        url,
        retry=Retry(_BACKOFF, _RETRIES),
        retry_on_error=[ConnectionError, TimeoutError],
        socket_timeout=None,  # rq blocks on the queue for longer than the web's 2 s
        socket_keepalive=True,
        health_check_interval=15,  # a pooled socket idle that long is pinged before use
    )


class IvrWorker(Worker):
    """rq's worker, knowing whether it stopped because it was asked to."""

    stop_was_requested = False

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.stop_was_requested = True
        super().request_stop(signum, frame)


def run(url: str, *, name: str | None = None, burst: bool = False) -> None:
    """Work the `ivr` queue (and its scheduled retries) until asked to stop.

    Job arguments are never logged (only job ids): they name calls and accounts.

    Raises:
        IvrError: the worker stopped without being asked (Redis gone for longer than
            `OUTAGE_BUDGET`, or an rq failure); the log above says why.
    """
    worker = IvrWorker([QUEUE], connection=connect(url), name=name, log_job_description=False)
    worker.work(burst=burst, with_scheduler=True)
    if not burst and not worker.stop_was_requested:
        raise IvrError(f"worker {worker.name} stopped unexpectedly; see its log above")
