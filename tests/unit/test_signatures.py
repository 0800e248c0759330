"""Webhook signatures: good, forged and wrongly signed requests; the public URL behind a proxy."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from ivr.simulator import (
    CallPlayer,
    Reply,
    WsgiTransport,
    scripted,
)
from ivr.store import keys
from ivr.store.audit import AuditLog
from tests.conftest import (
    ALICE,
    BASE_URL,
    PIN_CALL,
    TOKEN,
    Caller,
    DemoCustomer,
    call_params,
    make_app,
    signed_post,
)
from tests.support import (
    SID,
    call_keys,
    gather_action,
    redis_snapshot,
    sign,
)

PUBLIC = "https://ivr.example.com"


OTHER_SID = "CA" + "fedcba9876543210" * 2


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
