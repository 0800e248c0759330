"""The voice webhooks, driven the way Twilio drives them: signed requests, whole calls, retries.

Whole calls go through the simulator (`CallPlayer` over `WsgiTransport`); single requests that
Twilio would never send on its own (forged, replayed, malformed) go through the Flask test client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from twilio.request_validator import RequestValidator

from ivr.runtime import Runtime, connect_redis
from ivr.runtime import runtime as current_runtime
from ivr.simulator import (
    CallPlayer,
    CallResult,
    Enqueue,
    Gather,
    Hangup,
    Keys,
    Reply,
    Say,
    Speech,
    WsgiTransport,
    parse_twiml,
    scripted,
)
from ivr.store import keys
from ivr.store.audit import AuditLog
from ivr.store.counters import FailureCounter
from ivr.store.server import find_free_port
from ivr.store.sessions import SessionStore
from tests.conftest import (
    ALICE,
    BASE_URL,
    BOB,
    TOKEN,
    DemoCustomer,
    PlayerFactory,
    enrol,
    make_app,
)
from tests.support import (
    assert_never_enqueued,
    call_keys,
    redis_snapshot,
    sign,
    webhook_bodies,
)

APOLOGY = "We are sorry, we cannot take your call right now"
OTHER_ROUTE = "We could not verify your identity on this call"
DID_NOT_MATCH = "That did not match our records"
VERIFIED = "Thank you, you are verified"
PUBLIC = "https://ivr.example.com"
UNKNOWN_ACCOUNT = "99999999"
WRONG_PIN = "999999"
SID = "CA" + "0123456789abcdef" * 2
OTHER_SID = "CA" + "fedcba9876543210" * 2


# -- helpers ---------------------------------------------------------------------------------


def call_params(
    call_sid: str = SID, from_number: str = ALICE.phone, **extra: str
) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": "AC" + "5e" * 16,
        "From": from_number,
        "To": "+15005550001",
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def signed_post(
    client: FlaskClient,
    path: str,
    params: dict[str, str],
    *,
    signed_url: str | None = None,
    token: str = TOKEN,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST `params` to `path` on http://localhost, signed for `signed_url` (default: that URL)."""
    url = signed_url if signed_url is not None else BASE_URL + path
    all_headers = {**sign(token, url, params), **(headers or {})}
    return client.post(path, data=params, headers=all_headers, base_url=BASE_URL)


def verbs(body: bytes | str) -> list[Any]:
    return parse_twiml(body.decode() if isinstance(body, bytes) else body)


def gather_action(body: bytes | str) -> str:
    """The action URL of the (single) Gather in a reply: where the caller's answer goes."""
    gathers = [v for v in verbs(body) if isinstance(v, Gather)]
    assert len(gathers) == 1, body
    assert gathers[0].action is not None
    return gathers[0].action


def said(body: bytes | str) -> str:
    parts: list[str] = []
    for verb in verbs(body):
        if isinstance(verb, Say):
            parts.append(verb.text)
        elif isinstance(verb, Gather):
            parts.extend(c.text for c in verb.children if isinstance(c, Say))
    return " ".join(parts)


def assert_apology(body: bytes | str) -> None:
    parsed = verbs(body)
    assert any(isinstance(v, Say) and APOLOGY in v.text for v in parsed), body
    assert isinstance(parsed[-1], Hangup), body
    assert not any(isinstance(v, Enqueue | Gather) for v in parsed), body


def auth_events(rt: Runtime) -> list[dict[str, Any]]:
    return [e for e in rt.audit.recent(10_000) if e["event"] == "authenticate"]


class Caller:
    """A call driven request by request through the test client, following the Gather actions."""

    def __init__(self, client: FlaskClient, call_sid: str = SID, from_number: str = ALICE.phone):
        self.client = client
        self.call_sid = call_sid
        self.from_number = from_number
        self.action: str | None = None
        self.last: Any = None

    def params(self, **extra: str) -> dict[str, str]:
        return call_params(self.call_sid, self.from_number, **extra)

    def start(self) -> Any:
        return self._post("/voice", self.params())

    def answer(self, **given: str) -> Any:
        assert self.action is not None, "no question pending"
        return self._post(self.action, self.params(**given))

    def post(self, path: str, **given: str) -> Any:
        return signed_post(self.client, path, self.params(**given))

    def _post(self, path: str, params: dict[str, str]) -> Any:
        response = signed_post(self.client, path, params)
        assert response.status_code == 200, response.data
        self.last = response
        if any(isinstance(v, Gather) for v in verbs(response.data)):
            self.action = gather_action(response.data)
        else:
            self.action = None
        return response

    def to(self, step: str) -> Caller:
        """Drive the call (as Alice) until it waits at `step`."""
        self.start()
        if step == "identify":
            return self
        self.answer(Digits=ALICE.account)
        if step == "choose_method":
            return self
        if step in ("pin", "passcode"):
            self.answer(Digits="1" if step == "pin" else "2")
            return self
        assert step == "main_menu", step
        self.answer(Digits="1")
        self.answer(Digits=ALICE.pin)
        return self


def state_of(redis: Any, call_sid: str = SID) -> Any:
    stored = SessionStore(redis, 3600).load(call_sid)
    assert stored is not None
    return stored.state


class RewritingTransport:
    """What a TLS-terminating proxy does: Twilio talks https to the public name, the app sees
    http://localhost, optionally with X-Forwarded-* headers added by the proxy."""

    def __init__(self, app: Flask, forwarded: dict[str, str] | None = None) -> None:
        self.inner = WsgiTransport(app)
        self.forwarded = forwarded or {}
        self.seen: list[str] = []

    def _local(self, url: str) -> str:
        assert url.startswith(PUBLIC), url
        local = BASE_URL + url[len(PUBLIC) :]
        self.seen.append(local)
        return local

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        return self.inner.post(self._local(url), params, {**headers, **self.forwarded})

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        return self.inner.get(self._local(url), {**headers, **self.forwarded})


FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "ivr.example.com",
    "X-Forwarded-For": "203.0.113.9",
}


PIN_CALL = (Keys(ALICE.account + "#"), Keys("1"), Keys(ALICE.pin + "#"), Keys("1"))


# -- signatures ------------------------------------------------------------------------------


class TestSignatures:
    ENDPOINTS = ("/voice", "/voice/step/identify?seq=0", "/voice/status", "/voice/fallback")

    @staticmethod
    def _bad_headers(case: str, path: str, params: dict[str, str]) -> dict[str, str]:
        url = BASE_URL + path
        if case == "missing":
            return {}
        if case == "empty":
            return {"X-Twilio-Signature": ""}
        if case == "wrong":
            return {"X-Twilio-Signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8="}
        if case == "garbage":
            return {"X-Twilio-Signature": "not base64 at all \u00e9"}
        if case == "other_url":
            return sign(TOKEN, BASE_URL + "/voice/other", params)
        if case == "other_query":
            return sign(TOKEN, url + ("&" if "?" in url else "?") + "x=1", params)
        if case == "other_token":
            return sign("another-accounts-token", url, params)
        if case == "tampered_params":
            return sign(TOKEN, url, {**params, "Digits": "0"})
        raise AssertionError(case)

    BAD_CASES = (
        "missing",
        "empty",
        "wrong",
        "garbage",
        "other_url",
        "other_query",
        "other_token",
        "tampered_params",
    )

    @pytest.mark.parametrize("path", ENDPOINTS)
    @pytest.mark.parametrize("case", BAD_CASES)
    def test_bad_signature_is_403_with_no_side_effect(
        self,
        client: FlaskClient,
        redis: Any,
        customers: dict[str, DemoCustomer],
        case: str,
        path: str,
    ) -> None:
        params = call_params(Digits=ALICE.account)
        before = redis_snapshot(redis)
        response = client.post(
            path,
            data=params,
            headers=self._bad_headers(case, path, params),
            base_url=BASE_URL,
        )
        assert response.status_code == 403
        assert b"<Response" not in response.data
        assert redis_snapshot(redis) == before
        assert call_keys(redis) == []
        assert not redis.exists(keys.AUDIT)

    def test_forged_request_mid_call_changes_nothing(self, client: FlaskClient, redis: Any) -> None:
        caller = Caller(client).to("pin")
        before = redis_snapshot(redis)
        response = client.post(
            caller.action,
            data=caller.params(Digits=ALICE.pin),
            headers=sign(TOKEN, BASE_URL + "/voice", caller.params()),
            base_url=BASE_URL,
        )
        assert response.status_code == 403
        assert redis_snapshot(redis) == before

    def test_valid_signature_starts_the_call(self, client: FlaskClient, redis: Any) -> None:
        params = call_params()
        signature = RequestValidator(TOKEN).compute_signature(BASE_URL + "/voice", params)
        response = client.post(
            "/voice", data=params, headers={"X-Twilio-Signature": signature}, base_url=BASE_URL
        )
        assert response.status_code == 200
        assert response.mimetype == "application/xml"
        assert gather_action(response.data) == "/voice/step/identify?seq=0"
        assert call_keys(redis) == [keys.call(SID).encode()]
        assert [e["event"] for e in AuditLog(redis).recent()] == ["call_started"]

    @pytest.mark.parametrize("token", [None, ""])
    @pytest.mark.parametrize("path", ENDPOINTS)
    def test_app_without_auth_token_refuses_everything(
        self, redis: Any, monkeypatch: pytest.MonkeyPatch, token: str | None, path: str
    ) -> None:
        monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
        app = make_app(redis, twilio_auth_token=token)
        client = app.test_client()
        params = call_params()
        for signing_token in (TOKEN, ""):
            response = signed_post(client, path, params, token=signing_token)
            assert response.status_code == 403
        assert redis_snapshot(redis) == {}

    def test_published_twilio_test_vector(self) -> None:
        url = "https://mycompany.com/myapp.php?foo=1&bar=2"
        params = {
            "CallSid": "CA1234567890ABCDE",
            "Caller": "+14158675309",
            "Digits": "1234",
            "From": "+14158675309",
            "To": "+18005551212",
        }
        expected = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        validator = RequestValidator("12345")
        assert validator.compute_signature(url, params) == expected
        assert validator.validate(url, params, expected)
        assert not validator.validate(url, {**params, "Digits": "1235"}, expected)
        assert not RequestValidator("54321").validate(url, params, expected)

    @pytest.mark.parametrize("public_url", [None, PUBLIC])
    def test_percent_encoded_query_validates_as_twilio_signed_it(
        self, redis: Any, public_url: str | None
    ) -> None:
        # A webhook URL configured with an escaped non-ASCII query value: Twilio signs the URL
        # exactly as configured, escapes included.
        app = make_app(redis, public_url=public_url)
        path = "/voice?greeting=caf%C3%A9"
        response = signed_post(
            app.test_client(), path, call_params(), signed_url=(public_url or BASE_URL) + path
        )
        assert response.status_code == 200

    def test_simulated_call_with_wrong_token_gets_403(self, app: Flask, redis: Any) -> None:
        result = CallPlayer(WsgiTransport(app), BASE_URL, "not-the-token").play(scripted())
        assert result.outcome == "error"
        assert result.error_status == 403
        assert call_keys(redis) == []


class TestBehindAProxy:
    def test_public_url_is_what_is_checked(self, redis: Any) -> None:
        app = make_app(redis, public_url=PUBLIC)
        client = app.test_client()
        params = call_params()
        ok = signed_post(client, "/voice", params, signed_url=PUBLIC + "/voice")
        assert ok.status_code == 200
        assert ok.request.url == BASE_URL + "/voice"
        assert gather_action(ok.data) == "/voice/step/identify?seq=0"
        local = signed_post(client, "/voice", call_params(OTHER_SID))
        assert local.status_code == 403

    def test_public_url_keeps_the_query_string(self, redis: Any, customers: Any) -> None:
        app = make_app(redis, public_url=PUBLIC + "/")
        client = app.test_client()
        assert (
            signed_post(client, "/voice", call_params(), signed_url=PUBLIC + "/voice").status_code
            == 200
        )
        path = "/voice/step/identify?seq=0"
        params = call_params(Digits=ALICE.account)
        wrong = signed_post(client, path, params, signed_url=PUBLIC + "/voice/step/identify")
        assert wrong.status_code == 403
        right = signed_post(client, path, params, signed_url=PUBLIC + path)
        assert right.status_code == 200
        assert gather_action(right.data) == "/voice/step/choose_method?seq=1"

    def test_whole_call_through_public_url(self, redis: Any, customers: Any) -> None:
        app = make_app(redis, public_url=PUBLIC)
        transport = RewritingTransport(app)
        result = CallPlayer(transport, PUBLIC, TOKEN).play(scripted(*PIN_CALL))
        assert result.outcome == "enqueued", result.transcript(requests=True)
        assert result.queue == "balances"
        assert result.status_callback is not None
        assert result.status_callback.status == 204
        assert all(url.startswith(BASE_URL + "/") for url in transport.seen)

    def test_one_trusted_hop_checks_the_forwarded_url(self, redis: Any) -> None:
        app = make_app(redis, proxy_hops=1, allowed_hosts="ivr.example.com")
        client = app.test_client()
        response = signed_post(
            client, "/voice", call_params(), signed_url=PUBLIC + "/voice", headers=FORWARDED
        )
        assert response.status_code == 200
        assert response.request.url == BASE_URL + "/voice"  # what the socket saw
        # The URL as this process sees it without the proxy's word for it no longer validates.
        local = signed_post(client, "/voice", call_params(OTHER_SID), headers=FORWARDED)
        assert local.status_code == 403

    def test_no_trusted_hops_ignores_forwarded_headers(self, redis: Any) -> None:
        app = make_app(redis, proxy_hops=0)
        client = app.test_client()
        response = signed_post(
            client, "/voice", call_params(), signed_url=PUBLIC + "/voice", headers=FORWARDED
        )
        assert response.status_code == 403
        assert redis_snapshot(redis) == {}
        plain = signed_post(client, "/voice", call_params(), headers=FORWARDED)
        assert plain.status_code == 200

    def test_only_the_trusted_hop_value_counts(self, redis: Any) -> None:
        app = make_app(redis, proxy_hops=1, allowed_hosts="ivr.example.com")
        client = app.test_client()
        # A client put its own X-Forwarded-Host in front; our one proxy appended the real one.
        spoofed = {**FORWARDED, "X-Forwarded-Host": "evil.example, ivr.example.com"}
        forged = signed_post(
            client,
            "/voice",
            call_params(),
            signed_url="https://evil.example/voice",
            headers=spoofed,
        )
        assert forged.status_code == 403
        honest = signed_post(
            client, "/voice", call_params(), signed_url=PUBLIC + "/voice", headers=spoofed
        )
        assert honest.status_code == 200

    def test_whole_call_behind_one_proxy_with_prefix(self, redis: Any, customers: Any) -> None:
        app = make_app(redis, proxy_hops=1, allowed_hosts="ivr.example.com")

        class StripPrefix(RewritingTransport):
            def _local(self, url: str) -> str:
                assert url.startswith(PUBLIC + "/ivr/"), url
                return super()._local(PUBLIC + url[len(PUBLIC + "/ivr") :])

        transport = StripPrefix(app, {**FORWARDED, "X-Forwarded-Prefix": "/ivr"})
        player = CallPlayer(
            transport,
            PUBLIC + "/ivr",
            TOKEN,
            voice_path="/voice",
            status_path="/voice/status",
        )
        result = player.play(scripted(*PIN_CALL))
        assert result.outcome == "enqueued", result.transcript(requests=True)
        gathers = [e.url for e in result.events if e.kind == "gather"]
        assert gathers and all(u.startswith(PUBLIC + "/ivr/voice/step/") for u in gathers)


# -- whole calls -----------------------------------------------------------------------------


class TestWholeCalls:
    def test_pin_reaches_the_chosen_queue(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        result = player().play(scripted(*PIN_CALL))
        assert result.outcome == "enqueued", result.transcript(requests=True)
        assert result.queue == "balances"
        assert result.said(VERIFIED)
        assert result.said("Connecting you to an agent who can help with your balance")
        assert [e["outcome"] for e in auth_events(runtime)] == ["success"]
        assert result.status_callback is not None and result.status_callback.status == 204

    @pytest.mark.parametrize(
        ("choice", "queue"),
        [(Keys("1"), "balances"), (Speech("my balance"), "balances"), (Keys("0"), "general")],
    )
    def test_each_menu_choice_has_its_queue(
        self, player: PlayerFactory, customers: Any, choice: Any, queue: str
    ) -> None:
        script = scripted(Keys(ALICE.account + "#"), Keys("1"), Keys(ALICE.pin + "#"), choice)
        result = player().play(script)
        assert result.outcome == "enqueued"
        assert result.queue == queue

    def test_a_card_change_is_stepped_up_not_enqueued_on_a_pin_alone(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("1"),
            Keys(ALICE.pin + "#"),
            Speech("card"),
            None,
            None,
            None,
        )
        result = player().play(script)
        assert result.said("Card changes need one more check")
        assert result.outcome == "hung_up"
        assert all("<Enqueue" not in body for body in result.responses)

    def test_passcode_by_speech(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Speech("passcode"),
            Speech("Purple elephant, forty-two.", confidence=0.9),
            Speech("I want an agent please"),
        )
        result = player().play(script)
        assert result.outcome == "enqueued", result.transcript(requests=True)
        assert result.queue == "general"
        assert [(e["method"], e["outcome"]) for e in auth_events(runtime)] == [
            ("passcode", "success")
        ]

    def test_caller_id_star_pound_uses_the_calling_number(
        self, player: PlayerFactory, customers: Any, runtime: Runtime, redis: Any
    ) -> None:
        p = player(from_number=ALICE.phone)
        result = p.play(scripted(Keys("*#"), Keys("1"), Keys(ALICE.pin + "#"), Keys("1")))
        assert result.outcome == "enqueued", result.transcript(requests=True)
        assert result.queue == "balances"
        assert state_of(redis, p.call_sid).account == ALICE.account
        # The prompt tells the caller this is how caller ID is used.
        assert result.said("press star, then pound")

    def test_caller_id_from_unknown_number_cannot_use_a_pin(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        script = scripted(
            Keys("*#"), Keys("1"), Keys(ALICE.pin + "#"), Keys("1"), Keys(ALICE.pin + "#")
        )
        result = player(from_number="+14155550111").play(script)
        assert result.said(OTHER_ROUTE)
        assert_never_enqueued(result)

    def test_caller_id_identifies_but_does_not_authenticate(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        script = scripted(Keys("*#"), Keys("1"), Keys(WRONG_PIN + "#"), Keys("1"), Keys("123987#"))
        result = player(from_number=ALICE.phone).play(script)
        assert result.said(OTHER_ROUTE)
        assert_never_enqueued(result)

    def test_two_wrong_pins_end_authentication(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("1"),
            Keys(WRONG_PIN + "#"),
            Keys("1"),
            Keys("123987#"),
        )
        result = player().play(script)
        assert result.said(DID_NOT_MATCH)
        assert result.said("You have 1 attempt left")
        assert result.said(OTHER_ROUTE)
        assert result.outcome == "hung_up"
        assert_never_enqueued(result)
        assert script.remaining == []
        assert [e["outcome"] for e in auth_events(runtime)] == ["failure", "failure"]

    def test_wrong_pin_then_wrong_passcode_ends_too(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("1"),
            Keys(WRONG_PIN + "#"),
            Keys("2"),
            Speech("orange tiger seven", confidence=0.95),
        )
        result = player().play(script)
        assert result.said(OTHER_ROUTE)
        assert result.outcome == "hung_up"
        assert_never_enqueued(result)
        assert [(e["method"], e["outcome"]) for e in auth_events(runtime)] == [
            ("passcode", "failure"),  # newest first
            ("pin", "failure"),
        ]

    def test_correct_secret_after_the_budget_is_spent_is_never_asked(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        # The right PIN as a third attempt is never even requested: the call is over.
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("1"),
            Keys(WRONG_PIN + "#"),
            Keys("1"),
            Keys(WRONG_PIN + "#"),
            Keys("1"),
            Keys(ALICE.pin + "#"),
        )
        result = player().play(script)
        assert_never_enqueued(result)
        assert len(script.remaining) == 2

    def test_low_confidence_counts_as_a_failure(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("2"),
            Speech("Purple elephant, forty-two.", confidence=0.3),
            Keys("2"),
            Speech("Purple elephant, forty-two.", confidence=0.2),
        )
        result = player().play(script)
        assert result.said(DID_NOT_MATCH)
        assert result.said(OTHER_ROUTE)
        assert_never_enqueued(result)
        assert [e["outcome"] for e in auth_events(runtime)] == ["failure", "failure"]

    def test_low_confidence_then_clear_answer_succeeds(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("2"),
            Speech("Purple elephant, forty-two.", confidence=0.3),
            Keys("2"),
            Speech("purple elephant four two", confidence=0.9),
            Keys("0"),
        )
        result = player().play(script)
        assert result.outcome == "enqueued", result.transcript(requests=True)
        assert result.said("You have 1 attempt left")
        assert [e["outcome"] for e in auth_events(runtime)] == ["success", "failure"]
        assert FailureCounter(runtime.redis).count(ALICE.account, "passcode") == 0

    def test_silence_reprompts_then_gives_up_politely(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        result = player().play(scripted(None, None, None))
        assert result.said("We did not receive a response")
        assert result.outcome == "hung_up"
        assert_never_enqueued(result)


# -- no enumeration --------------------------------------------------------------------------


def two_attempts(account: str, first: Any, second: Any, method_key: str = "1") -> Any:
    return scripted(Keys(account + "#"), Keys(method_key), first, Keys(method_key), second)


class TestNoEnumeration:
    @pytest.mark.parametrize("unknown", [UNKNOWN_ACCOUNT, "000000", "123456789012"])
    def test_unknown_account_sounds_like_wrong_pin(
        self, player: PlayerFactory, customers: Any, unknown: str
    ) -> None:
        unknown_player, known_player = player(), player()
        unknown_call = unknown_player.play(
            two_attempts(unknown, Keys(ALICE.pin + "#"), Keys(BOB.pin + "#"))
        )
        wrong_call = known_player.play(
            two_attempts(ALICE.account, Keys(WRONG_PIN + "#"), Keys("123987#"))
        )
        assert webhook_bodies(unknown_call) == webhook_bodies(wrong_call)
        assert unknown_call.said(OTHER_ROUTE)
        for body in webhook_bodies(unknown_call) + webhook_bodies(wrong_call):
            assert unknown_player.call_sid not in body
            assert known_player.call_sid not in body
            assert ALICE.account not in body and unknown not in body

    def test_unknown_account_sounds_like_wrong_passcode(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        passcode = Speech(ALICE.passcode)
        unknown_call = player().play(two_attempts(UNKNOWN_ACCOUNT, passcode, passcode, "2"))
        wrong_call = player().play(
            two_attempts(ALICE.account, Speech("blue whale 7"), Speech("red fox 9"), "2")
        )
        assert webhook_bodies(unknown_call) == webhook_bodies(wrong_call)

    def test_caller_id_unknown_number_sounds_like_known_number(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        script = (Keys("*#"), Keys("1"), Keys(WRONG_PIN + "#"), Keys("1"), Keys(WRONG_PIN + "#"))
        unknown = player(from_number="+14155550111").play(scripted(*script))
        known = player(from_number=ALICE.phone).play(scripted(*script))
        assert webhook_bodies(unknown) == webhook_bodies(known)

    def test_account_without_that_factor_sounds_like_wrong_secret(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        runtime.customers.update(BOB.account, pin_hash=None)
        no_pin = player().play(two_attempts(BOB.account, Keys(BOB.pin + "#"), Keys(BOB.pin + "#")))
        wrong = player().play(
            two_attempts(ALICE.account, Keys(WRONG_PIN + "#"), Keys(WRONG_PIN + "#"))
        )
        assert webhook_bodies(no_pin) == webhook_bodies(wrong)
        assert_never_enqueued(no_pin)


# -- idempotency -----------------------------------------------------------------------------


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
        assert "Please enter your PIN" in said(stale.data)
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


# -- nothing secret at rest or in URLs -------------------------------------------------------


SECRET_TEXTS = (
    ALICE.pin,
    WRONG_PIN,
    ALICE.passcode,
    "purpleelephant42",
    "Purple elephant, forty-two.",
    "orange tiger",
)


class TestNothingSecretAtRest:
    def test_no_secret_in_redis_urls_or_logs(
        self,
        player: PlayerFactory,
        customers: Any,
        redis: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        caplog.set_level(logging.DEBUG, logger="ivr")
        results = [
            player().play(scripted(*PIN_CALL)),
            player().play(
                scripted(
                    Keys(ALICE.account + "#"),
                    Keys("1"),
                    Keys(WRONG_PIN + "#"),
                    Keys("2"),
                    Speech("Purple elephant, forty-two.", confidence=0.9),
                    Keys("1"),
                )
            ),
            player().play(
                two_attempts(
                    ALICE.account, Speech("orange tiger 7"), Speech(ALICE.passcode, 0.1), "2"
                )
            ),
        ]
        assert [r.outcome for r in results] == ["enqueued", "enqueued", "hung_up"]

        stored = redis_snapshot(redis)
        everything = repr(stored).encode() + b"".join(
            k + v for value in stored.values() if isinstance(value, dict) for k, v in value.items()
        )
        for secret in SECRET_TEXTS:
            assert secret.encode() not in everything, secret
            for result in results:
                for event in result.events:
                    assert secret not in event.url
            for record in caplog.records:
                text = record.getMessage() + (record.exc_text or "") + repr(record.args)
                assert secret not in text, record
        assert caplog.records, "expected the webhooks to log something"

        for who in (ALICE, BOB):
            record = stored[keys.customer(who.account).encode()]
            assert record[b"pin_hash"].startswith(b"$argon2id$")
            assert record[b"passcode_hash"].startswith(b"$argon2id$")

    def test_gather_actions_carry_only_step_and_seq(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        result = player().play(scripted(*PIN_CALL))
        for event in result.events:
            if event.kind == "gather":
                path = event.url.removeprefix(BASE_URL)
                assert path.startswith("/voice/step/")
                assert path.split("?", 1)[1].startswith("seq=")
                assert "&" not in path


# -- per-account lockout across calls ---------------------------------------------------------


class TestAccountLockout:
    @pytest.fixture
    def strict_app(self, redis: Any, customers: Any) -> Flask:
        # One number fails more often here than its abuse limit allows (tests/unit/test_abuse.py).
        return make_app(redis, account_max_failures=3, abuse_number_failures=20)

    def _call(self, player: PlayerFactory, app: Flask, *pins: str) -> CallResult:
        inputs: list[Any] = [Keys(ALICE.account + "#")]
        for pin in pins:
            inputs += [Keys("1"), Keys(pin + "#")]
        if len(pins) < 2:
            inputs.append(Keys("1"))  # the main menu, if the last PIN opened the door
        return player(app=app).play(scripted(*inputs))

    def test_correct_pin_stops_working_at_the_cap(
        self, strict_app: Flask, player: PlayerFactory, redis: Any
    ) -> None:
        self._call(player, strict_app, WRONG_PIN, WRONG_PIN)
        assert FailureCounter(redis).count(ALICE.account, "pin") == 2
        third = self._call(player, strict_app, WRONG_PIN, ALICE.pin)
        assert FailureCounter(redis).count(ALICE.account, "pin") == 3
        assert_never_enqueued(third)
        assert third.said(OTHER_ROUTE)

        locked = self._call(player, strict_app, ALICE.pin, ALICE.pin)
        assert_never_enqueued(locked)
        wrong_elsewhere = player(app=strict_app).play(
            two_attempts(BOB.account, Keys(WRONG_PIN + "#"), Keys(WRONG_PIN + "#"))
        )
        assert webhook_bodies(locked) == webhook_bodies(wrong_elsewhere)
        assert FailureCounter(redis).count(ALICE.account, "pin") == 3

        outcomes = [
            e["outcome"] for e in AuditLog(redis).recent(100) if e["event"] == "authenticate"
        ]
        assert "locked" in outcomes and "failure_locked_now" in outcomes

    def test_locked_pin_does_not_lock_the_passcode(
        self, strict_app: Flask, player: PlayerFactory, redis: Any
    ) -> None:
        for _ in range(3):
            FailureCounter(redis).add(ALICE.account, "pin")
        result = player(app=strict_app).play(
            scripted(Keys(ALICE.account + "#"), Keys("2"), Speech(ALICE.passcode), Keys("1"))
        )
        assert result.outcome == "enqueued"

    def test_success_before_the_cap_resets_the_count(
        self, strict_app: Flask, player: PlayerFactory, redis: Any
    ) -> None:
        self._call(player, strict_app, WRONG_PIN, WRONG_PIN)
        ok = self._call(player, strict_app, ALICE.pin)
        assert ok.outcome == "enqueued"
        assert FailureCounter(redis).count(ALICE.account, "pin") == 0
        self._call(player, strict_app, WRONG_PIN, WRONG_PIN)
        again = self._call(player, strict_app, ALICE.pin)
        assert again.outcome == "enqueued", again.transcript()


# -- status callback and fallback -------------------------------------------------------------


class TestStatusAndFallback:
    @pytest.mark.parametrize("status", ["completed", "busy", "failed", "no-answer", "canceled"])
    def test_status_callback_is_204_and_only_marks_the_call_over(
        self, client: FlaskClient, customers: Any, redis: Any, status: str
    ) -> None:
        caller = Caller(client).to("pin")
        before = redis_snapshot(redis)
        response = caller.post("/voice/status", CallStatus=status, CallDuration="12")
        assert response.status_code == 204
        assert response.data == b""
        after = redis_snapshot(redis)
        key = f"ivr:call:{SID}".encode()
        assert after.pop(key) == {**before.pop(key), b"over": b"1"}  # for the agent API
        assert after == before
        # The call carries on exactly where it was.
        assert VERIFIED in said(caller.answer(Digits=ALICE.pin).data)

    def test_status_for_unknown_call_creates_nothing(self, client: FlaskClient, redis: Any) -> None:
        response = signed_post(client, "/voice/status", call_params(CallStatus="completed"))
        assert response.status_code == 204
        assert response.data == b""
        assert redis_snapshot(redis) == {}

    def test_status_with_bad_input_is_still_204(self, client: FlaskClient, redis: Any) -> None:
        response = signed_post(
            client, "/voice/status", {"CallSid": "x" * 10_000, "CallStatus": "\u202e" * 5000}
        )
        assert response.status_code == 204
        assert redis_snapshot(redis) == {}

    def test_simulated_call_ends_with_a_status_callback(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        result = player().play(scripted(*PIN_CALL))
        assert result.status_callback is not None
        assert result.status_callback.status == 204
        assert result.status_callback.body == ""

    def test_fallback_apologises_and_hangs_up(self, client: FlaskClient, redis: Any) -> None:
        params = call_params(ErrorCode="11200", ErrorUrl=BASE_URL + "/voice")
        response = signed_post(client, "/voice/fallback", params)
        assert response.status_code == 200
        assert response.mimetype == "application/xml"
        assert_apology(response.data)
        assert redis_snapshot(redis) == {}

    def test_fallback_mid_call_never_opens_the_door(
        self, client: FlaskClient, customers: Any, redis: Any
    ) -> None:
        caller = Caller(client).to("main_menu")
        before = redis_snapshot(redis)
        response = caller.post("/voice/fallback", Digits="1")
        assert_apology(response.data)
        assert redis_snapshot(redis) == before


# -- bad input -------------------------------------------------------------------------------


def assert_polite(response: Any) -> list[Any]:
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/xml"
    parsed = verbs(response.data)
    assert parsed, response.data
    assert not any(isinstance(v, Enqueue) for v in parsed)
    assert any(isinstance(v, Say | Gather) for v in parsed)
    return parsed


ODD_UNICODE = "\u202e\u200b\ufeff\u0000\U0001f600e\u0301\u0645\u0631\u062d\u0628\u0627\ud7ff"
HEX32 = "0123456789abcdef" * 2


BAD_FIELDS = [
    ("digits_10k", {"Digits": "5" * 10_000}),
    ("digits_10k_prefixed", {"Digits": ALICE.pin + "0" * 9_994}),
    ("digits_letters", {"Digits": "12ab34"}),
    ("digits_unicode", {"Digits": "\u0665\u0668\u0663\u0669\u0662\u0660"}),
    ("digits_symbols", {"Digits": "*#*#"}),
    ("digits_empty", {"Digits": ""}),
    # 12,000 characters, 57 KB urlencoded: near the body bound (a larger body is a 413).
    ("speech_12k", {"SpeechResult": (ODD_UNICODE + "purple ") * 600, "Confidence": "0.9"}),
    ("speech_odd", {"SpeechResult": ODD_UNICODE, "Confidence": "0.95"}),
    ("confidence_nan", {"SpeechResult": ALICE.passcode, "Confidence": "nan"}),
    ("confidence_negative", {"SpeechResult": ALICE.passcode, "Confidence": "-1"}),
    ("confidence_text", {"SpeechResult": ALICE.passcode, "Confidence": "abc"}),
    ("confidence_inf", {"SpeechResult": ALICE.passcode, "Confidence": "inf"}),
    ("confidence_big", {"SpeechResult": ALICE.passcode, "Confidence": "1e308"}),
    ("nothing", {}),
]


class TestBadInput:
    @pytest.mark.parametrize(
        "call_sid",
        [
            None,
            "",
            "CA123",
            "CA" + "g" * 32,
            "XX" + HEX32,
            "ca" + HEX32,
            "CA" + HEX32 + "0",
            "CA" + HEX32 + "\n",
            " CA" + HEX32,
            "CA" + HEX32[:31] + "\u0660",
            "x" * 10_000,
        ],
    )
    def test_malformed_call_sid_gets_the_apology(
        self, client: FlaskClient, redis: Any, call_sid: str | None
    ) -> None:
        params = call_params()
        if call_sid is None:
            del params["CallSid"]
        else:
            params["CallSid"] = call_sid
        response = signed_post(client, "/voice", params)
        assert_polite(response)
        assert_apology(response.data)
        assert call_keys(redis) == []

    def test_malformed_call_sid_on_a_step_gets_the_apology(
        self, client: FlaskClient, redis: Any
    ) -> None:
        Caller(client).start()
        before = redis_snapshot(redis)
        params = call_params("CA123", Digits=ALICE.account)
        response = signed_post(client, "/voice/step/identify?seq=0", params)
        assert_apology(response.data)
        assert redis_snapshot(redis) == before

    @pytest.mark.parametrize(
        "from_number",
        ["anonymous", "+266696687", "sip:alice@example.com", "", "\u202e" * 200, "+1" * 5000],
    )
    def test_odd_caller_ids_start_a_normal_call(
        self, client: FlaskClient, customers: Any, redis: Any, from_number: str
    ) -> None:
        caller = Caller(client, from_number=from_number)
        assert gather_action(caller.start().data) == "/voice/step/identify?seq=0"
        assert len(state_of(redis).caller) <= 64
        # "Use my caller ID" from such a number claims nothing usable: no PIN can open the door.
        caller.answer(Digits="*")
        caller.answer(Digits="1")
        caller.answer(Digits=ALICE.pin)
        caller.answer(Digits="1")
        end = caller.answer(Digits=BOB.pin)
        assert OTHER_ROUTE in said(end.data)
        assert "<Enqueue" not in end.get_data(as_text=True)

    @pytest.mark.parametrize("step", ["identify", "choose_method", "pin", "passcode"])
    @pytest.mark.parametrize(("name", "given"), BAD_FIELDS, ids=[n for n, _ in BAD_FIELDS])
    def test_bad_gather_input_gets_a_polite_prompt(
        self,
        client: FlaskClient,
        customers: Any,
        runtime: Runtime,
        redis: Any,
        step: str,
        name: str,
        given: dict[str, str],
    ) -> None:
        caller = Caller(client).to(step)
        response = caller.post(caller.action, **given)
        parsed = assert_polite(response)
        assert not any(isinstance(v, Hangup) for v in parsed)
        state = state_of(redis)
        assert state.proofs == []
        assert not state.ended
        assert all(e["outcome"] != "success" for e in auth_events(runtime))

    @pytest.mark.parametrize("value", ["nan", "-1", "abc", "inf", "-0.5", "1.5", " ", "0x1p-1"])
    def test_unusable_confidence_counts_as_a_failed_attempt(
        self, client: FlaskClient, customers: Any, runtime: Runtime, redis: Any, value: str
    ) -> None:
        caller = Caller(client).to("passcode")
        response = caller.post(caller.action, SpeechResult=ALICE.passcode, Confidence=value)
        assert DID_NOT_MATCH in said(response.data)
        assert state_of(redis).failures == 1
        assert [e["outcome"] for e in auth_events(runtime)] == ["failure"]

    @pytest.mark.parametrize(
        "path",
        [
            "/voice/step/nonexistent?seq={seq}",
            "/voice/step/main_menu?seq={seq}",
            "/voice/step/balance_queue?seq={seq}",
            "/voice/step/other_route?seq={seq}",
            "/voice/step/PIN?seq={seq}",
            "/voice/step/" + "a" * 5000 + "?seq={seq}",
            "/voice/step/no%20such?seq={seq}",
        ],
    )
    def test_unknown_or_wrong_step_re_asks_the_question(
        self, client: FlaskClient, customers: Any, runtime: Runtime, redis: Any, path: str
    ) -> None:
        caller = Caller(client).to("pin")
        before = redis_snapshot(redis)
        response = caller.post(path.format(seq=state_of(redis).seq), Digits="1")
        assert_polite(response)
        assert gather_action(response.data) == caller.action
        assert redis_snapshot(redis) == before
        assert auth_events(runtime) == []

    @pytest.mark.parametrize("query", ["?seq=abc", "?seq=", "?seq=1.5", "", "?seq=%00", "?sq=2"])
    def test_non_integer_seq_gets_the_apology_and_loses_nothing(
        self, client: FlaskClient, customers: Any, runtime: Runtime, redis: Any, query: str
    ) -> None:
        caller = Caller(client).to("pin")
        before = redis_snapshot(redis)
        response = caller.post("/voice/step/pin" + query, Digits=ALICE.pin)
        assert_polite(response)
        assert_apology(response.data)
        assert redis_snapshot(redis) == before
        assert auth_events(runtime) == []
        # The real request, when it comes, still works.
        assert VERIFIED in said(caller.answer(Digits=ALICE.pin).data)

    def test_huge_seq_is_just_stale(self, client: FlaskClient, customers: Any, redis: Any) -> None:
        caller = Caller(client).to("pin")
        before = redis_snapshot(redis)
        response = caller.post("/voice/step/pin?seq=" + "9" * 400, Digits=ALICE.pin)
        assert_polite(response)
        assert redis_snapshot(redis) == before

    def test_step_for_unknown_call_gets_the_apology(self, client: FlaskClient, redis: Any) -> None:
        response = signed_post(client, "/voice/step/pin?seq=2", call_params(Digits=ALICE.pin))
        assert_apology(response.data)
        assert redis_snapshot(redis) == {}

    def test_non_form_body_is_refused(self, client: FlaskClient, redis: Any) -> None:
        url = BASE_URL + "/voice"
        response = client.post(
            "/voice",
            json=call_params(),
            headers=sign(TOKEN, url, {}),
            base_url=BASE_URL,
        )
        # Signed, but the parameters are not where Twilio puts them (nor what it signs).
        assert response.status_code == 415
        assert call_keys(redis) == []

    def test_get_is_not_allowed(self, client: FlaskClient) -> None:
        response = client.get("/voice", base_url=BASE_URL)
        assert response.status_code in (403, 405)


# -- redis failing ---------------------------------------------------------------------------


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
