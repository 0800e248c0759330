"""Job functions for the worker-resilience tests (importable by a real worker from the checkout).

Each leaves a mark in the Redis its worker is connected to, so a test sees that the job ran and
that its own Redis writes landed, even across a Redis restart.
"""

from __future__ import annotations

import time

from rq import get_current_job


def mark(key: str) -> None:
    job = get_current_job()
    assert job is not None
    job.connection.set(key, job.id)


def sleep_then_mark(seconds: float, key: str) -> None:
    """A job still busy when Redis goes away: its write at the end meets the outage."""
    time.sleep(seconds)
    mark(key)
