"""Prometheus metrics: what a scrape of `/metrics` shows, and where each figure comes from.

Three sources, each the natural owner of its figures:

- counters of what happened (calls started, authentication outcomes, enqueues, sends, abuse
  trips) are the audit trail's own counts, kept in Redis (`ivr.store.event_counts`), so the
  worker's sends reach the web's scrape wherever the worker runs; read at scrape time;
- webhook latency is a histogram per process, by Flask endpoint name (never the URL, which
  carries parameters); under gunicorn every worker writes it to PROMETHEUS_MULTIPROC_DIR
  (set up by `ivr.gunicorn_conf`) and a scrape, answered by any one of them, sums them all;
- the worker queue's depth and the live workers are read from rq at scrape time.

Counters and gauges read from Redis describe the whole deployment: every web process reports
the same value, so aggregate them with `max`, not `sum`, across instances.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Flask, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis import Redis
from rq import Queue, Worker
from rq.defaults import DEFAULT_WORKER_TTL
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.utils import now as rq_now
from rq.utils import utcparse

from ivr.processes import QUEUE
from ivr.store import event_counts

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: A worker whose last heartbeat is older is taken for dead. rq beats at least every
#: worker_ttl - 15 s while idle and expires a silent worker's key worker_ttl + 60 s after it.
WORKER_SILENCE = DEFAULT_WORKER_TTL + 60

_HELP = {
    "calls_started": "Calls that reached the flow, by kind (inbound, callback).",
    "authentications": "Authentication attempts, by method and outcome.",
    "lockouts": "Factors locked after too many failures in a row, by method.",
    "enqueues": "Calls handed to an agent queue, by queue and proven assurance.",
    "enqueues_refused": "Calls the flow led to a queue their proofs did not open.",
    "sends": "One-time code and call-back deliveries, by channel and outcome.",
    "abuse_trips": "Abuse limits tripped, by pattern and outcome (alert, refused).",
}

#: Latency buckets around the webhook budget: p99 <= 0.3 s is the target, 15 s Twilio's limit.
WEBHOOK_SECONDS = Histogram(
    "ivr_webhook_seconds",
    "Time to answer a request, by Flask endpoint (voice.incoming, voice.step, ...).",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 15.0),
    registry=None,
)


def time_requests(app: Flask) -> None:
    """Observe every request's time to answer, under its endpoint name (the signature check
    included: the app's hooks run before the blueprint's)."""

    @app.before_request
    def _started() -> None:
        g.ivr_started = time.perf_counter()

    @app.teardown_request
    def _finished(_error: BaseException | None) -> None:
        started = g.get("ivr_started")
        if started is not None:
            endpoint = request.endpoint or "unmatched"
            WEBHOOK_SECONDS.labels(endpoint).observe(time.perf_counter() - started)


def live_workers(redis: Redis) -> int:
    """Workers of our queue whose heartbeat is recent (what rq registers for each worker)."""
    worker_keys = Worker.all_keys(connection=redis, queue=Queue(QUEUE, connection=redis))
    if not worker_keys:
        return 0
    pipe = redis.pipeline(transaction=False)
    for key in worker_keys:
        pipe.hget(key, "last_heartbeat")
    now = rq_now()
    alive = 0
    for beat in pipe.execute():
        try:
            seen = utcparse(beat.decode())
        except (AttributeError, ValueError):  # no heartbeat yet, or not rq's
            continue
        alive += (now - seen).total_seconds() <= WORKER_SILENCE
    return alive


class RedisFigures(Collector):
    """The figures a scrape reads from Redis: event counters, queue depth, live workers."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def collect(self) -> Iterator[Metric]:
        families = {
            name: CounterMetricFamily(f"ivr_{name}", _HELP[name], labels=labels)
            for name, labels in event_counts.LABELS.items()
        }
        for name, labels, value in event_counts.read(self.redis):
            families[name].add_metric([labels[k] for k in event_counts.LABELS[name]], value)
        yield from families.values()
        queue = Queue(QUEUE, connection=self.redis)
        depth = GaugeMetricFamily(
            "ivr_worker_queue_jobs", "Jobs on the worker queue, by state.", labels=["state"]
        )
        depth.add_metric(["queued"], queue.count)
        depth.add_metric(["scheduled"], ScheduledJobRegistry(queue=queue).count)
        depth.add_metric(["started"], StartedJobRegistry(queue=queue).count)
        yield depth
        yield GaugeMetricFamily(
            "ivr_workers", "Workers with a recent heartbeat.", value=live_workers(self.redis)
        )


def exposition(redis: Redis) -> tuple[bytes, str]:
    """The text a scrape gets, and its content type."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)  # every gunicorn worker's histogram, summed
    else:
        registry.register(WEBHOOK_SECONDS)
    registry.register(RedisFigures(redis))
    return generate_latest(registry), CONTENT_TYPE_LATEST
