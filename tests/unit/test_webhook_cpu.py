"""What the webhook's per-process shortcuts (issue 9, web CPU) must leave exactly as it was.

Each one answers what the slow path answers: the signature shortcut accepts what
RequestValidator.validate accepts and nothing else, and a request's audit events reach the
stream in order, with the save or on their own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.exceptions import ResponseError
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from ivr.flows.engine import CallState
from ivr.security import _valid
from ivr.store import keys
from ivr.store.audit import AuditLog
from ivr.store.sessions import SessionStore

TOKEN = "a-test-auth-token"


URLS = [
    "https://ivr.example.com/voice/step/pin?seq=1",
    "https://ivr.example.com:443/voice/step/pin?seq=1",
    "http://127.0.0.1:8080/voice",
    "http://localhost/voice/status",
]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("signed_for", URLS)
def test_the_signature_shortcut_accepts_exactly_what_validate_accepts(
    url: str, signed_for: str
) -> None:
    validator = RequestValidator(TOKEN)
    forms = [
        MultiDict({"CallSid": "CA" + "1" * 32, "Digits": "1234#", "From": "+14155550100"}),
        MultiDict([("Digits", "1"), ("Digits", "2"), ("CallSid", "CA1")]),
        MultiDict(),
    ]
    for form in forms:
        for signature in (
            validator.compute_signature(signed_for, form),
            RequestValidator("another-token").compute_signature(signed_for, form),
            "",
            "x" * 28,
        ):
            assert _valid(validator, url, form, signature) == validator.validate(
                url, form, signature
            ), (url, signed_for, form, signature)


class TestAuditBatch:
    def stream(self, redis: Any) -> list[dict[str, str]]:
        return [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in redis.xrange(keys.AUDIT)
        ]

    def test_events_wait_for_the_writer_and_keep_their_order(self, redis: Any) -> None:
        audit = AuditLog(redis)
        with audit.batched() as batch:
            audit.record("one", call_sid="CA1")
            audit.record("two", call_sid="CA1")
            assert not redis.exists(keys.AUDIT)
            with redis.pipeline(transaction=False) as pipe:
                batch.write(pipe)
                pipe.execute()
            audit.record("three", call_sid="CA1")
        assert [e["event"] for e in self.stream(redis)] == ["one", "two", "three"]

    def test_events_nobody_wrote_are_written_on_the_way_out_even_on_error(self, redis: Any) -> None:
        audit = AuditLog(redis)
        with pytest.raises(RuntimeError), audit.batched():
            audit.record("call_started", call_sid="CA1", caller="+14155550100")
            raise RuntimeError("the handler failed")
        assert [e["event"] for e in self.stream(redis)] == ["call_started"]

    def test_outside_a_batch_and_for_another_redis_events_are_written_at_once(
        self, redis: Any
    ) -> None:
        import fakeredis

        other = fakeredis.FakeRedis()
        audit = AuditLog(redis)
        audit.record("alone", call_sid="CA1")
        assert len(self.stream(redis)) == 1
        with audit.batched():
            AuditLog(other).record("elsewhere", call_sid="CA1")
            assert len(self.stream(other)) == 1

    def test_unknown_fields_are_still_refused_in_a_batch(self, redis: Any) -> None:
        audit = AuditLog(redis)
        with pytest.raises(ValueError), audit.batched():
            audit.record("oops", pin="1234")  # type: ignore[arg-type]
        assert not redis.exists(keys.AUDIT)


class TestSaveWithEvents:
    def test_the_events_and_the_save_go_together(self, redis: Any) -> None:
        sessions, audit = SessionStore(redis, 60), AuditLog(redis)
        state = CallState(call_sid="CA" + "2" * 32, caller="+14155550100", step="menu")
        with audit.batched() as events, sessions.take(state.call_sid) as taken:
            audit.record("identify", call_sid=state.call_sid)
            sessions.save(state, 0, "<Response/>", taken.lock, also=events.write)
        stored = sessions.load(state.call_sid)
        assert stored is not None and stored.reply == "<Response/>"
        assert not redis.exists(keys.call_lock(state.call_sid))
        assert [json.loads(json.dumps(e))["event"] for e in TestAuditBatch().stream(redis)] == [
            "identify"
        ]

    def test_a_save_after_redis_forgot_its_scripts_still_saves(self, redis: Any) -> None:
        sessions = SessionStore(redis, 60)
        state = CallState(call_sid="CA" + "3" * 32, caller="+14155550100", step="menu")
        redis.script_flush()
        with sessions.take(state.call_sid) as taken:
            sessions.save(state, 0, "<Response/>", taken.lock, also=lambda pipe: None)
        stored = sessions.load(state.call_sid)
        assert stored is not None and stored.reply == "<Response/>"

    def test_an_error_of_the_other_writes_is_raised(self, redis: Any) -> None:
        sessions = SessionStore(redis, 60)
        state = CallState(call_sid="CA" + "4" * 32, caller="+14155550100", step="menu")
        redis.set("not-a-stream", "x")
        with pytest.raises(ResponseError), sessions.take(state.call_sid) as taken:
            sessions.save(
                state,
                0,
                "<R/>",
                taken.lock,
                also=lambda pipe: pipe.xadd("not-a-stream", {"a": "b"}),
            )
