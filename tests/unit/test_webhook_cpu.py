"""What the webhook's per-process shortcuts (issue 9, web CPU) must leave exactly as it was.

Each one answers what the slow path answers: a reply from a template is the builder's reply,
the signature shortcut accepts what RequestValidator.validate accepts and nothing else, and a
request's audit events reach the stream in order, with the save or on their own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.exceptions import ResponseError
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from ivr.flows.engine import Action, Ask, CallState, Enqueue, Hangup, Hold, Say
from ivr.flows.render import Templates, render
from ivr.security import _valid
from ivr.store import keys
from ivr.store.audit import AuditLog
from ivr.store.sessions import SessionStore
from tests.engine_fakes import DEFAULT

TOKEN = "a-test-auth-token"


def plain_url(step: str, poll: bool, seq: int = 3) -> str:
    return f"/voice/{'poll' if poll else 'step'}/{step}?seq={seq}"


REPLIES: list[list[Action]] = [
    [Say('Welcome to <Example> & "Sons"\' bank.')],
    [Say("Hi."), Ask(step="pin", input="dtmf", prompt="Enter your PIN.", timeout=7), Hangup()],
    [
        Ask(
            step="menu",
            input="dtmf speech",
            prompt="Say it",
            speech=True,
            hints=("a", "b"),
            num_digits=1,
            finish_on_key=None,
        )
    ],
    [Say("Hold on."), Hold("sms_code", 2)],
    [Ask(step="a", input="dtmf", prompt="One"), Ask(step="b", input="dtmf", prompt="Two")],
    [Say("Bye."), Hangup()],
]


@pytest.mark.parametrize("actions", REPLIES)
@pytest.mark.parametrize("workflow", [None, "WW" + "0" * 32])
def test_a_reply_from_its_template_is_the_builders_reply(
    actions: list[Action], workflow: str | None
) -> None:
    templates = Templates()
    for seq in (3, 4, 17):  # the first makes the template, the others use it

        def url(step: str, poll: bool, seq: int = seq) -> str:
            return plain_url(step, poll, seq)

        assert render(actions, DEFAULT, url, workflow, templates) == render(
            actions, DEFAULT, url, workflow
        )
    voiced = DEFAULT.model_copy(update={"voice": "Polly.Joanna", "language": "en-GB"})
    assert render(actions, voiced, plain_url, workflow, templates) == render(
        actions, voiced, plain_url, workflow
    )


def test_a_url_that_needs_escaping_is_rendered_by_the_builder() -> None:
    templates = Templates()
    actions: list[Action] = [Ask(step="pin", input="dtmf", prompt="PIN")]
    render(actions, DEFAULT, plain_url, None, templates)

    def odd(step: str, poll: bool) -> str:
        return f"/voice/step/{step}?seq=1&x=<\"'>"

    twiml = render(actions, DEFAULT, odd, None, templates)
    assert twiml == render(actions, DEFAULT, odd)
    assert "&amp;x=&lt;" in twiml


def test_enqueue_attributes_are_never_taken_from_another_reply() -> None:
    """Enqueue's attributes are no part of its equality: it is never templated."""
    templates = Templates()
    workflow = "WW" + "0" * 32
    first = render([Enqueue("q", "cards", {"ref": "one"})], DEFAULT, plain_url, workflow, templates)
    second = render(
        [Enqueue("q", "cards", {"ref": "two"})], DEFAULT, plain_url, workflow, templates
    )
    assert '"ref":"one"' in first and '"ref":"two"' in second


def test_templates_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import ivr.flows.render as render_module

    monkeypatch.setattr(render_module, "MAX_TEMPLATES", 3)
    templates = Templates()
    for index in range(10):
        render([Say(f"Line {index}.")], DEFAULT, plain_url, None, templates)
        assert len(templates) <= 3


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
