"""The voice webhooks when Redis is down or failing: an apology, never an agent."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask import Flask
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ivr.runtime import connect_redis
from ivr.runtime import runtime as current_runtime
from ivr.simulator import (
    CallPlayer,
    WsgiTransport,
    scripted,
)
from ivr.store.server import find_free_port
from tests.conftest import (
    ALICE,
    BASE_URL,
    TOKEN,
    Caller,
    call_params,
    enrol,
    make_app,
    signed_post,
)
from tests.support import (
    APOLOGY,
    assert_apology,
    assert_never_enqueued,
    state_of,
)


class TestRedisFailing:
    @pytest.fixture
    def dead_app(self) -> Iterator[Flask]:
        # A closed port. No retries: redis-py's default (10 with backoff) only adds ~4 s of
        # sleep here; the production client (`connect_redis`) is checked separately below.
        dead = Redis(
            port=find_free_port(),
            socket_connect_timeout=0.2,
            socket_timeout=0.2,
            retry=Retry(NoBackoff(), 0),
        )
        yield make_app(dead)
        dead.close()

    def test_production_client_fails_fast(self) -> None:
        dead = connect_redis(f"redis://127.0.0.1:{find_free_port()}/0")
        app = make_app(dead)
        started = time.monotonic()
        result = CallPlayer(WsgiTransport(app), BASE_URL, TOKEN).play(scripted())
        dead.close()
        assert time.monotonic() - started < 5
        assert result.said(APOLOGY)
        assert_never_enqueued(result)

    @pytest.mark.parametrize("path", ["/voice", "/voice/step/pin?seq=2"])
    def test_unreachable_redis_gets_the_apology(
        self, dead_app: Flask, path: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        response = signed_post(dead_app.test_client(), path, call_params(Digits=ALICE.pin))
        assert response.status_code == 200
        assert_apology(response.data)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert errors
        assert all(ALICE.pin not in (r.getMessage() + (r.exc_text or "")) for r in errors)

    def test_unreachable_redis_status_and_fallback_still_answer(self, dead_app: Flask) -> None:
        client = dead_app.test_client()
        assert signed_post(client, "/voice/status", call_params()).status_code == 204
        assert_apology(signed_post(client, "/voice/fallback", call_params()).data)

    def test_simulated_call_against_dead_redis_is_told_sorry(self, dead_app: Flask) -> None:
        result = CallPlayer(WsgiTransport(dead_app), BASE_URL, TOKEN).play(scripted())
        assert result.outcome == "hung_up"
        assert result.said(APOLOGY)
        assert_never_enqueued(result)

    @pytest.fixture
    def flaky(self) -> Iterator[tuple[fakeredis.FakeServer, Any, Flask]]:
        """An app on its own fake server, which a test can disconnect mid-call."""
        server = fakeredis.FakeServer()
        store = fakeredis.FakeRedis(server=server)
        app = make_app(store)
        with app.app_context():
            enrol(current_runtime(), ALICE)
        yield server, store, app
        server.connected = True
        store.close()

    def test_redis_lost_mid_call_fails_closed(self, flaky: tuple[Any, Any, Flask]) -> None:
        server, store, app = flaky
        caller = Caller(app.test_client()).to("main_menu")
        server.connected = False
        assert_apology(caller.post(caller.action, Digits="1").data)
        server.connected = True
        # Nothing half-written: the call is where it was; the retry carries on from there.
        state = state_of(store)
        assert state.step == "main_menu"
        assert not state.ended
        assert caller.post(caller.action, Digits="1").status_code == 200

    def test_redis_lost_before_pin_check_does_not_authenticate(
        self, flaky: tuple[Any, Any, Flask]
    ) -> None:
        server, store, app = flaky
        caller = Caller(app.test_client()).to("pin")
        server.connected = False
        assert_apology(caller.post(caller.action, Digits=ALICE.pin).data)
        server.connected = True
        state = state_of(store)
        assert state.proofs == []
        assert state.step == "pin"
        assert state.failures == 0
