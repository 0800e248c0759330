"""SECURITY 26, 31: the worker survives a Redis restart, idle or in the middle of a job.

A real redis-server of the test's own (never the session one) is killed and started again on
the same port under a real worker started exactly as the Procfile and `ivr dev` start it. What
a caller depends on must still work afterwards: a job queued now runs, and so does a job that
waits in rq's schedule (a send that failed for now is retried that way).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import redis
from rq import Queue
from rq.job import JobStatus

from ivr.processes import QUEUE
from tests.integration.conftest import RestartableRedis
from tests.integration.worker_jobs import mark, sleep_then_mark
from tests.support import wait_until

#: Seconds a restarted worker may take to pick work up again (it backs off while Redis is away).
RECOVERY = 20.0


def assert_keeps_working(worker: object, conn: redis.Redis) -> None:
    """A job queued now and one waiting in rq's schedule both run on this worker."""
    queue = Queue(QUEUE, connection=conn)
    queue.enqueue(mark, "it:now")
    queue.enqueue_in(timedelta(seconds=1), mark, "it:scheduled")
    wait_until(lambda: conn.get("it:now"), RECOVERY, "a job queued after the restart did not run")
    wait_until(
        lambda: conn.get("it:scheduled"),
        RECOVERY,
        "a scheduled job (how a failed send is retried) did not run after the restart",
    )
    assert worker.running, worker.log_tail()  # type: ignore[attr-defined]
    assert "unhandled exception" not in worker.log()  # type: ignore[attr-defined]


def test_idle_worker_survives_a_redis_restart(
    private_redis: RestartableRedis, worker_on_redis: Callable[..., object]
) -> None:
    worker = worker_on_redis(private_redis.url)
    private_redis.kill()
    time.sleep(2)
    private_redis.start()
    assert_keeps_working(worker, private_redis.client())


def test_busy_worker_survives_a_redis_restart_and_finishes_the_job(
    private_redis: RestartableRedis, worker_on_redis: Callable[..., object]
) -> None:
    worker = worker_on_redis(private_redis.url)
    conn = private_redis.client()
    job = Queue(QUEUE, connection=conn).enqueue(sleep_then_mark, 2.0, "it:busy")
    wait_until(lambda: job.get_status() == JobStatus.STARTED, 10, "the slow job did not start")
    private_redis.kill()
    time.sleep(6)  # the job ends, and writes, while Redis is away
    private_redis.start()
    conn = private_redis.client()
    wait_until(lambda: conn.get("it:busy"), RECOVERY, "the job in progress did not finish its work")
    assert_keeps_working(worker, conn)
