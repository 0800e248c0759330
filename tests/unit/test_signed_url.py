"""The URL a signature is checked against is ours (SECURITY 3).

Twilio signs the URL it requested. Built from a request's Host, that URL is whatever the sender
says, so a signature made for another deployment of the same Twilio account would validate here:
the Host must be one this service answers to (IVR_ALLOWED_HOSTS, the host of IVR_PUBLIC_URL, or
loopback on a development machine). A failed signature says in the log what it was checked
against and the likely cause, never the token or the signature.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask.testing import FlaskClient

from ivr.errors import SettingsError
from ivr.settings import load_settings
from tests.conftest import TOKEN, make_app
from tests.support import SIGNATURE_HEADER, redis_snapshot, sign

SID = "CA" + "7c" * 16
PARAMS = {"CallSid": SID, "From": "+14155550100", "To": "+15005550001"}
PUBLIC = "https://ivr.example.com"
OTHER = "https://ivr.other-bank.example"  # another deployment on the same Twilio account


def post_as_twilio(client: FlaskClient, base: str, *, signed_for: str | None = None) -> Any:
    """POST /voice to `base` (its host is the Host header), signed for `signed_for` + /voice."""
    url = (signed_for or base) + "/voice"
    return client.post("/voice", data=PARAMS, headers=sign(TOKEN, url, PARAMS), base_url=base)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


class TestHosts:
    def test_a_foreign_host_is_refused_by_default(self, redis: Any) -> None:
        # Signed for the URL the request names, as the other deployment's webhook would be.
        response = post_as_twilio(make_app(redis).test_client(), OTHER)
        assert response.status_code == 403
        assert redis_snapshot(redis) == {}

    @pytest.mark.parametrize("base", ["http://localhost", "http://127.0.0.1:8000"])
    def test_loopback_is_served_when_nothing_names_the_service(self, redis: Any, base: str) -> None:
        assert post_as_twilio(make_app(redis).test_client(), base).status_code == 200

    def test_a_foreign_host_is_refused_with_a_public_url(self, redis: Any) -> None:
        client = make_app(redis, public_url=PUBLIC).test_client()
        response = post_as_twilio(client, OTHER, signed_for=PUBLIC)
        assert response.status_code == 403
        assert redis_snapshot(redis) == {}
        assert post_as_twilio(client, PUBLIC).status_code == 200

    def test_a_foreign_host_is_refused_with_allowed_hosts(self, redis: Any) -> None:
        client = make_app(redis, allowed_hosts="ivr.example.com").test_client()
        assert post_as_twilio(client, OTHER).status_code == 403
        assert post_as_twilio(client, "http://localhost").status_code == 403  # exactly the list
        assert redis_snapshot(redis) == {}
        assert post_as_twilio(client, PUBLIC).status_code == 200

    def test_a_leading_dot_allows_subdomains(self, redis: Any) -> None:
        client = make_app(redis, allowed_hosts=".example.com").test_client()
        assert post_as_twilio(client, "https://ivr.example.com").status_code == 200
        assert post_as_twilio(client, "https://example.com.evil.example").status_code == 403

    def test_the_forwarded_host_is_checked_behind_a_proxy(self, redis: Any) -> None:
        client = make_app(redis, proxy_hops=1, allowed_hosts="ivr.example.com").test_client()
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ivr.other-bank.example"}
        response = client.post(
            "/voice",
            data=PARAMS,
            headers={**sign(TOKEN, OTHER + "/voice", PARAMS), **forwarded},
            base_url="http://localhost",
        )
        assert response.status_code == 403
        assert redis_snapshot(redis) == {}

    def test_the_service_code_api_refuses_a_foreign_host_too(self, client: FlaskClient) -> None:
        response = client.post("/api/service-codes", json={}, base_url=OTHER)
        assert response.status_code == 403

    def test_a_refused_host_is_named_in_one_warning(
        self, redis: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        post_as_twilio(make_app(redis, allowed_hosts="ivr.example.com").test_client(), OTHER)
        (line,) = warnings_of(caplog)
        assert "ivr.other-bank.example" in line and "IVR_ALLOWED_HOSTS" in line


class TestSignatureFailureLog:
    """One warning line: the URL checked, the likely cause; never the token or the signature."""

    @pytest.mark.parametrize(
        ("overrides", "headers", "checked", "cause"),
        [
            ({}, {}, "http://localhost/voice", "TWILIO_AUTH_TOKEN"),
            ({}, {"X-Forwarded-Proto": "https"}, "http://localhost/voice", "IVR_PROXY_HOPS is 0"),
            ({"public_url": PUBLIC}, {}, PUBLIC + "/voice", "IVR_PUBLIC_URL is " + PUBLIC),
            (
                {"proxy_hops": 1, "allowed_hosts": "ivr.example.com"},
                {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ivr.example.com"},
                PUBLIC + "/voice",
                "1 proxy hop",
            ),
        ],
        ids=["wrong-token", "proxy-not-trusted", "public-url", "behind-proxy"],
    )
    def test_says_what_was_checked_and_why_it_may_fail(
        self,
        redis: Any,
        caplog: pytest.LogCaptureFixture,
        overrides: dict[str, Any],
        headers: dict[str, str],
        checked: str,
        cause: str,
    ) -> None:
        client = make_app(redis, **overrides).test_client()
        signature = sign("some-other-token", "https://ivr.example.com/voice", PARAMS)
        response = client.post(
            "/voice", data=PARAMS, headers={**signature, **headers}, base_url="http://localhost"
        )
        assert response.status_code == 403
        (line,) = warnings_of(caplog)
        assert f"checked against {checked} " in line
        assert cause in line
        assert TOKEN not in line
        assert signature[SIGNATURE_HEADER] not in line

    def test_no_line_for_a_good_signature(
        self, client: FlaskClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        assert post_as_twilio(client, "http://localhost").status_code == 200
        assert warnings_of(caplog) == []


class TestAllowedHostsSetting:
    def test_a_comma_separated_list(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("IVR_ALLOWED_HOSTS", "IVR.example.com, .example.net,,10.0.0.5")
        assert load_settings().allowed_hosts == ("ivr.example.com", ".example.net", "10.0.0.5")

    @pytest.mark.parametrize(
        "value", ["https://ivr.example.com", "ivr.example.com:443", "*", "ivr..example.com"]
    )
    def test_anything_else_is_refused_naming_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        monkeypatch.setenv("IVR_ALLOWED_HOSTS", value)
        with pytest.raises(SettingsError, match=r"^IVR_ALLOWED_HOSTS: .*no scheme or port"):
            load_settings()
