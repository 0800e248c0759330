"""`/healthz`, `/readyz` and `/metrics` as a load balancer, an orchestrator and Prometheus see them:
on any Host, one word each, and the figures only to the token's bearer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, Worker
from rq.utils import now, utcformat

from ivr.auth.abuse import Pattern, Trip, alert_detail
from ivr.processes import QUEUE
from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, Keys
from ivr.store import event_counts
from tests.conftest import Caller, call_params, make_app, signed_post, up_to_card_check
from tests.support import WRONG_PIN, StrictTurns, assert_card_services

METRICS_TOKEN = "unit-test-metrics-token-0123"
INTERNAL_HOST = "10.0.3.7:8000"  # what a load balancer's health check puts in Host


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def register_worker(redis: Any, seen_ago: timedelta = timedelta(0)) -> Worker:
    """A worker of our queue as rq registers it, its last heartbeat `seen_ago`."""
    worker = Worker([Queue(QUEUE, connection=redis)], connection=redis)
    worker.register_birth()
    redis.hset(worker.key, "last_heartbeat", utcformat(now() - seen_ago))
    return worker


def get(client: FlaskClient, path: str, **headers: str) -> Any:
    return client.get(path, headers={"Host": INTERNAL_HOST, **headers})


class TestHealth:
    def test_healthz_says_ok_on_an_internal_host_that_webhooks_are_refused_on(
        self, client: FlaskClient
    ) -> None:
        reply = get(client, "/healthz")
        assert (reply.status_code, reply.text) == (200, "ok")
        assert reply.headers["Cache-Control"] == "no-store"
        refused = client.post("/voice", data=call_params(), headers={"Host": INTERNAL_HOST})
        assert refused.status_code == 403

    def test_healthz_needs_no_redis(self, client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
        redis.connection_pool.connection_kwargs["server"].connected = False
        assert get(client, "/healthz").status_code == 200
        reply = get(client, "/readyz")
        assert (reply.status_code, reply.text) == (503, "redis")

    def test_only_get_and_head(self, client: FlaskClient) -> None:
        assert client.head("/healthz", headers={"Host": INTERNAL_HOST}).status_code == 200
        assert client.post("/healthz", headers={"Host": INTERNAL_HOST}).status_code == 405


class TestReady:
    def test_not_ready_without_a_worker(self, client: FlaskClient) -> None:
        reply = get(client, "/readyz")
        assert (reply.status_code, reply.text) == (503, "worker")

    def test_ready_with_a_worker_seen_lately(self, client: FlaskClient, redis: Any) -> None:
        register_worker(redis, timedelta(seconds=400))  # idle rq beats every worker_ttl - 15 s
        reply = get(client, "/readyz")
        assert (reply.status_code, reply.text) == (200, "ok")

    def test_a_worker_silent_too_long_is_not_counted(self, client: FlaskClient, redis: Any) -> None:
        register_worker(redis, timedelta(minutes=10))
        assert get(client, "/readyz").text == "worker"

    def test_a_worker_of_another_queue_is_not_ours(self, client: FlaskClient, redis: Any) -> None:
        Worker([Queue("elsewhere", connection=redis)], connection=redis).register_birth()
        assert get(client, "/readyz").text == "worker"

    def test_says_nothing_but_the_word(self, client: FlaskClient, redis: Any) -> None:
        register_worker(redis)
        reply = get(client, "/readyz")
        assert reply.data == b"ok"
        assert set(reply.headers.keys()) == {"Content-Type", "Content-Length", "Cache-Control"}


class TestMetricsAccess:
    def test_not_served_without_a_token_configured(self, client: FlaskClient) -> None:
        assert get(client, "/metrics").status_code == 404
        assert get(client, "/metrics", Authorization="Bearer ").status_code == 404

    @pytest.mark.parametrize(
        "authorization", [None, "", "Bearer", f"Bearer {METRICS_TOKEN}x", f"Basic {METRICS_TOKEN}"]
    )
    def test_refused_without_the_token(
        self, redis: Any, outbox_path: Any, authorization: str | None
    ) -> None:
        client = make_app(redis, outbox=outbox_path, metrics_token=METRICS_TOKEN).test_client()
        headers = {} if authorization is None else {"Authorization": authorization}
        reply = get(client, "/metrics", **headers)
        assert reply.status_code == 401
        assert b"ivr_" not in reply.data

    def test_the_token_is_a_secret_setting(self) -> None:
        from ivr.settings import SECRET_VARIABLES

        assert "IVR_METRICS_TOKEN" in SECRET_VARIABLES


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = get(client, "/metrics", Authorization=f"Bearer {METRICS_TOKEN}")
    assert reply.status_code == 200, reply.data
    assert reply.content_type.startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


@pytest.fixture
def metrics_app(redis: Any, outbox_path: Any) -> Flask:
    return make_app(redis, outbox=outbox_path, metrics_token=METRICS_TOKEN)


@pytest.fixture
def metrics_client(metrics_app: Flask) -> FlaskClient:
    return metrics_app.test_client()


def value(figures: dict[Any, float], name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


class TestFigures:
    def test_a_whole_sms_call_counts_what_happened(
        self,
        metrics_app: Flask,
        metrics_client: FlaskClient,
        caller: Callable[..., CallPlayer],
        handset: Any,
        runtime: Runtime,
    ) -> None:
        before = scrape(metrics_client)
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_latest),
        )
        result = caller(app=metrics_app).play(turns)
        assert_card_services(result)
        after = scrape(metrics_client)

        assert value(after, "ivr_calls_started_total", kind="inbound") == 1
        assert value(after, "ivr_authentications_total", method="pin", outcome="success") == 1
        assert value(after, "ivr_authentications_total", method="sms_otp", outcome="success") == 1
        assert (
            value(after, "ivr_enqueues_total", queue="card-services", assurance="two_factor") == 1
        )
        # send_requested in the web process, sent in the worker (here run in-process)
        assert value(after, "ivr_sends_total", channel="sms", outcome="send_requested") == 1
        assert value(after, "ivr_sends_total", channel="sms", outcome="sent") == 1
        for endpoint in ("voice.incoming", "voice.step", "voice.poll"):
            grew = value(after, "ivr_webhook_seconds_count", endpoint=endpoint) - value(
                before, "ivr_webhook_seconds_count", endpoint=endpoint
            )
            assert grew >= 1, endpoint
        assert value(after, "ivr_worker_queue_jobs", state="queued") == 0
        assert value(after, "ivr_workers") == 0

    def test_a_failed_pin_counts_as_a_failure_of_its_method(
        self, metrics_client: FlaskClient, customers: Any
    ) -> None:
        Caller(metrics_client).to("pin").answer(Digits=WRONG_PIN)
        figures = scrape(metrics_client)
        assert value(figures, "ivr_authentications_total", method="pin", outcome="failure") == 1

    def test_queued_jobs_are_the_queue_depth(self, metrics_client: FlaskClient, redis: Any) -> None:
        queue = Queue(QUEUE, connection=redis)
        for _ in range(3):
            queue.enqueue("workers.jobs.send_code", "CA" + "0" * 32, "sms_otp", "n")
        register_worker(redis)
        figures = scrape(metrics_client)
        assert value(figures, "ivr_worker_queue_jobs", state="queued") == 3
        assert value(figures, "ivr_workers") == 1

    def test_an_abuse_trip_counts_under_its_pattern(self, runtime: Runtime) -> None:
        trip = Trip(Pattern.NUMBER_FAILURES, 7, 6, 3600, refused_for=3600)
        runtime.audit.record("abuse_alert", outcome="refused", detail=alert_detail(trip))
        assert event_counts.read(runtime.redis) == [
            ("abuse_trips", {"pattern": trip.pattern.value, "outcome": "refused"}, 1)
        ]

    def test_an_event_nobody_counts_adds_nothing(self, runtime: Runtime) -> None:
        runtime.audit.record("claim_dropped", call_sid="CA" + "1" * 32)
        assert event_counts.read(runtime.redis) == []

    def test_webhook_latency_is_labelled_by_endpoint_never_by_url(
        self, metrics_client: FlaskClient, customers: Any
    ) -> None:
        signed_post(metrics_client, "/voice/step/pin?seq=7", call_params())
        text = get(metrics_client, "/metrics", Authorization=f"Bearer {METRICS_TOKEN}").text
        assert 'endpoint="voice.step"' in text
        assert "seq=7" not in text
        assert "/voice/step" not in text
