"""Retried and out-of-order webhooks: one attempt counted, the first reply kept, no going back."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from ivr.runtime import Runtime
from ivr.simulator import (
    Gather,
)
from ivr.store.counters import FailureCounter
from tests.conftest import (
    ALICE,
    BOB,
    Caller,
)
from tests.support import (
    DID_NOT_MATCH,
    OTHER_ROUTE,
    VERIFIED,
    WRONG_PIN,
    auth_events,
    gather_action,
    redis_snapshot,
    said,
    state_of,
    verbs,
)


class TestIdempotency:
    def test_retried_gather_counts_one_attempt(
        self, client: FlaskClient, customers: Any, runtime: Runtime, redis: Any
    ) -> None:
        caller = Caller(client).to("pin")
        path = caller.action
        assert path == "/voice/step/pin?seq=2"
        first = caller.post(path, Digits=WRONG_PIN)
        again = caller.post(path, Digits=WRONG_PIN)
        assert first.status_code == again.status_code == 200
        assert first.data == again.data
        assert DID_NOT_MATCH in said(first.data)
        assert len(auth_events(runtime)) == 1
        assert FailureCounter(redis).count(ALICE.account, "pin") == 1
        assert state_of(redis).failures == 1

    def test_retry_with_a_different_answer_still_gets_the_first_reply(
        self, client: FlaskClient, customers: Any, runtime: Runtime, redis: Any
    ) -> None:
        # Twilio's retry is byte-for-byte the same request; anything else under the same seq is
        # a replay and must not get a second try at the secret.
        caller = Caller(client).to("pin")
        first = caller.post(caller.action, Digits=WRONG_PIN)
        replay = caller.post(caller.action, Digits=ALICE.pin)
        assert replay.data == first.data
        assert [e["outcome"] for e in auth_events(runtime)] == ["failure"]
        assert state_of(redis).proofs == []

    def test_retried_call_start_is_answered_once(
        self, client: FlaskClient, runtime: Runtime, redis: Any
    ) -> None:
        caller = Caller(client)
        first = caller.start()
        again = caller.start()
        assert first.data == again.data
        assert [e["event"] for e in runtime.audit.recent()] == ["call_started"]

    def test_stale_seq_re_asks_the_current_question(
        self, client: FlaskClient, customers: Any, runtime: Runtime, redis: Any
    ) -> None:
        caller = Caller(client).to("pin")
        current = caller.action
        before = redis_snapshot(redis)
        stale = caller.post("/voice/step/identify?seq=0", Digits=BOB.account)
        assert stale.status_code == 200
        assert gather_action(stale.data) == current
        assert "Enter your PIN" in said(stale.data)
        assert redis_snapshot(redis) == before
        assert state_of(redis).account == ALICE.account
        assert auth_events(runtime) == []
        # The call then carries on from where it really was.
        done = caller.post(current, Digits=ALICE.pin)
        assert VERIFIED in said(done.data)

    def test_future_seq_is_not_processed(
        self, client: FlaskClient, customers: Any, runtime: Runtime, redis: Any
    ) -> None:
        caller = Caller(client).to("pin")
        before = redis_snapshot(redis)
        ahead = caller.post("/voice/step/pin?seq=7", Digits=ALICE.pin)
        assert gather_action(ahead.data) == "/voice/step/pin?seq=2"
        assert redis_snapshot(redis) == before
        assert auth_events(runtime) == []

    def test_finished_call_stays_finished(
        self, client: FlaskClient, customers: Any, redis: Any
    ) -> None:
        caller = Caller(client).to("pin")
        caller.answer(Digits=WRONG_PIN)
        caller.answer(Digits="1")
        end = caller.answer(Digits=WRONG_PIN)
        assert OTHER_ROUTE in said(end.data)
        assert state_of(redis).ended
        seq = state_of(redis).seq
        for path in (
            f"/voice/step/main_menu?seq={seq}",
            f"/voice/step/pin?seq={seq}",
            f"/voice/step/other_route?seq={seq}",
        ):
            response = caller.post(path, Digits="1")
            assert response.status_code == 200
            assert "<Enqueue" not in response.get_data(as_text=True)
        restarted = caller.post("/voice")
        assert "<Enqueue" not in restarted.get_data(as_text=True)
        assert not any(isinstance(v, Gather) for v in verbs(restarted.data))
