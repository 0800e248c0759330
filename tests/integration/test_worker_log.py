"""SECURITY 9, 11: the worker's log names jobs by id, never by their arguments (which name calls,
accounts and destinations)."""

from __future__ import annotations

import time

import redis
from rq import Queue

from ivr.processes import QUEUE
from tests.integration.worker_jobs import mark


def test_worker_logs_job_ids_not_arguments(worker: object, redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    job = Queue(QUEUE, connection=conn).enqueue(mark, "it:argument-4155550100")
    deadline = time.monotonic() + 15
    while conn.get("it:argument-4155550100") is None:
        assert time.monotonic() < deadline, "the job did not run"
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while "Job OK" not in worker.log() and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.1)
    log = worker.log()  # type: ignore[attr-defined]
    assert job.id in log
    assert "4155550100" not in log
