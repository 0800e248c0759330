"""The rq worker as `ivr worker` (and so the Procfile, `ivr dev` and the tests) runs it.

Jobs run in the worker process itself (rq's `SimpleWorker`), not in a work horse forked per job
as rq's default `Worker` does, and the job modules are imported once, before any job (and before
the processes of `--processes` are forked from this one, which then share them). Measured with
`python -m bench.worker` (outbox backend, so no provider round trip): forking per job cost 54 ms
of CPU per text, 38 of them re-importing the job modules in every horse and most of the rest the
fork itself; in-process jobs cost about 5 ms. What a horse would have isolated is not needed
here: the jobs are short I/O, they hold no state between runs, rq's job timeout (SIGALRM) works
in the worker's main thread, and a plaintext code lives in a job's frame for one provider
request either way. Concurrency, needed once each text waits for a provider's round trip, comes
from several worker processes (`run(processes=N)`, rq's `WorkerPool`), not from forking.

rq's work loop quits on the first Redis error it does not expect (one while a job runs, or in
its scheduler process), and nothing brings it back: every later code send then times out. So
the worker's Redis client carries redis-py's own retry policy: every command, in each worker
process, its jobs and the scheduler process, waits out a Redis restart or failover of up to
`OUTAGE_BUDGET` seconds and carries on where it was. Longer outages are a supervisor's business:
the worker then exits non-zero, and the Procfile's platform or `ivr dev` starts it again.
"""

from __future__ import annotations

import importlib
import itertools
from multiprocessing.process import BaseProcess
from typing import Any

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry
from rq import SimpleWorker
from rq.worker_pool import WorkerData, WorkerPool

from ivr.errors import IvrError
from ivr.processes import QUEUE

# 0.2, 0.4, 0.8, 1.6, then 2 s between tries: a restart is noticed within 2 s of Redis answering.
_BACKOFF = ExponentialBackoff(cap=2.0, base=0.1)
_RETRIES = 18
OUTAGE_BUDGET = sum(_BACKOFF.compute(n) for n in range(1, _RETRIES + 1))  # about 31 s
#: The modules of the jobs the web process queues by name (`ivr.auth.possession`).
JOB_MODULES = ("workers.jobs",)


def connect(url: str) -> Redis:
    """A client that rides out a Redis restart; its pool settings reach the scheduler process
    and the pool's worker processes, which rq builds from them, TLS options included."""
    from ivr.runtime import connect_redis  # ivr.runtime imports this module's OUTAGE_BUDGET

    return connect_redis(
        url,
        retry=Retry(_BACKOFF, _RETRIES),
        retry_on_error=[ConnectionError, TimeoutError],
        socket_timeout=None,  # rq blocks on the queue for longer than the web's 2 s
        socket_keepalive=True,
        health_check_interval=15,  # a pooled socket idle that long is pinged before use
    )


class IvrWorker(SimpleWorker):
    """rq's worker, running each job in this process, never logging a job's description, and
    knowing whether it stopped because it was asked to."""

    stop_was_requested = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("log_job_description", False)  # rq's WorkerPool passes none
        super().__init__(*args, **kwargs)

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.stop_was_requested = True
        super().request_stop(signum, frame)


class IvrWorkerPool(WorkerPool):
    """rq's pool of worker processes, each named after the pool (`NAME-1`, `NAME-2`, ...), that
    stops them all when one stops without being asked, as a single worker would stop: the
    platform then restarts the command, rather than the pool working on short-handed."""

    failed = False

    def __init__(self, *args: Any, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = name or self.name
        self._numbers = itertools.count(1)

    def get_worker_process(
        self, name: str, burst: bool, _sleep: float = 0, logging_level: str = "INFO"
    ) -> BaseProcess:
        named = f"{self.name}-{next(self._numbers)}"
        return super().get_worker_process(named, burst, _sleep, logging_level)

    def handle_dead_worker(self, worker_data: WorkerData) -> None:
        super().handle_dead_worker(worker_data)
        if self.status != self.Status.STOPPED and not self._burst:
            self.log.error("a worker process stopped unexpectedly; stopping the others")
            self.failed = True
            self.status = self.Status.STOPPED
            self.stop_workers()


def run(url: str, *, name: str | None = None, burst: bool = False, processes: int = 1) -> None:
    """Work the `ivr` queue (and its scheduled retries) until asked to stop, in this process or
    in `processes` worker processes.

    Job arguments are never logged (only job ids): they name calls and accounts.

    Raises:
        IvrError: a worker stopped without being asked (Redis gone for longer than
            `OUTAGE_BUDGET`, or an rq failure); the log above says why.
    """
    for module in JOB_MODULES:
        importlib.import_module(module)
    connection = connect(url)
    if processes > 1:
        pool = IvrWorkerPool([QUEUE], connection, processes, IvrWorker, name=name)
        pool.start(burst=burst)
        if pool.failed:
            raise IvrError(f"a worker of {pool.name} stopped unexpectedly; see its log above")
        return
    worker = IvrWorker([QUEUE], connection=connection, name=name)
    worker.work(burst=burst, with_scheduler=True)
    if not burst and not worker.stop_was_requested:
        raise IvrError(f"worker {worker.name} stopped unexpectedly; see its log above")
