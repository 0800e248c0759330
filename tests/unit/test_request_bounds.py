"""Bodies are bounded before they are read, and a webhook's parameters come only from the
urlencoded body Twilio's signature covers (SECURITY 1, 27, 29).

Each refusal is checked for what it leaves behind: nothing in Redis, the call where it was.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder, run_wsgi_app

from ivr.security import MAX_BODY_BYTES
from ivr.simulator import Gather, parse_twiml
from tests.conftest import ALICE, API_TOKEN, BASE_URL, BOB, TOKEN
from tests.support import SIGNATURE_HEADER, audit_events, redis_snapshot, sign

SID = "CA" + "5a" * 16
FORM = "application/x-www-form-urlencoded"
BOB_ACCOUNT = BOB.account


def start_params(**extra: str) -> dict[str, str]:
    return {"CallSid": SID, "From": ALICE.phone, "To": "+15005550001", **extra}


def start_call(client: FlaskClient) -> str:
    """Start a call the way Twilio does; returns the path the first answer goes to."""
    params = start_params()
    response = client.post("/voice", data=params, headers=sign(TOKEN, BASE_URL + "/voice", params))
    assert response.status_code == 200
    (gather,) = [v for v in parse_twiml(response.data.decode()) if isinstance(v, Gather)]
    assert gather.action is not None
    return gather.action


def chunked_post(app: Flask, path: str, body: bytes, headers: dict[str, str]) -> str:
    """POST `body` with no Content-Length, as a chunked request reaches the app from gunicorn
    (which de-chunks it and sets `wsgi.input_terminated`). Returns the status line."""
    environ = EnvironBuilder(
        path=path,
        base_url=BASE_URL,
        method="POST",
        input_stream=io.BytesIO(body),
        content_type=FORM,
        headers={**headers, "Transfer-Encoding": "chunked"},
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    app_iter, status, _headers = run_wsgi_app(app, environ)
    b"".join(app_iter)
    return status


class TestBodiesAreBounded:
    def test_webhook_body_over_the_bound_is_413_and_changes_nothing(
        self, client: FlaskClient, redis: Any
    ) -> None:
        params = start_params(Junk="x" * MAX_BODY_BYTES)
        response = client.post(
            "/voice", data=params, headers=sign(TOKEN, BASE_URL + "/voice", params)
        )
        assert response.status_code == 413
        assert redis_snapshot(redis) == {}

    def test_chunked_body_over_the_bound_is_413(self, app: Flask, redis: Any) -> None:
        body = f"CallSid={SID}&Junk=".encode() + b"x" * (2 * MAX_BODY_BYTES)
        status = chunked_post(app, "/voice", body, sign(TOKEN, BASE_URL + "/voice", {}))
        assert status.startswith("413")
        assert redis_snapshot(redis) == {}

    def test_chunked_body_within_the_bound_is_served(self, app: Flask, redis: Any) -> None:
        params = start_params()
        body = "&".join(f"{k}={v}" for k, v in params.items()).replace("+", "%2B").encode()
        status = chunked_post(app, "/voice", body, sign(TOKEN, BASE_URL + "/voice", params))
        assert status.startswith("200")
        assert redis.exists(f"ivr:call:{SID}")

    def test_a_long_speech_result_within_the_bound_is_served(
        self, client: FlaskClient, customers: Any
    ) -> None:
        path = start_call(client)
        params = start_params(SpeechResult="purple elephant " * 1000, Confidence="0.9")
        response = client.post(path, data=params, headers=sign(TOKEN, BASE_URL + path, params))
        assert response.status_code == 200
        assert response.mimetype == "application/xml"

    def test_service_code_api_body_over_the_bound_is_a_json_413(
        self, client: FlaskClient, customers: Any, redis: Any
    ) -> None:
        before = redis_snapshot(redis)
        response = client.post(
            "/api/service-codes",
            data=b'{"account": "' + ALICE.account.encode() + b'", "pad": "' + b"x" * 70_000 + b'"}',
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            content_type="application/json",
        )
        assert response.status_code == 413
        assert response.is_json and "error" in response.json
        assert redis_snapshot(redis) == before


class TestOnlyTheSignedBodyIsRead:
    @pytest.mark.parametrize(
        "content_type", ["multipart/form-data", "application/json", "text/plain", ""]
    )
    def test_start_with_another_body_is_415_and_starts_nothing(
        self, client: FlaskClient, redis: Any, content_type: str
    ) -> None:
        # Signed over the bare URL with no parameters: that is all the signature covers of a
        # body that is not urlencoded, so nothing in it may be acted on.
        headers = sign(TOKEN, BASE_URL + "/voice", {})
        if content_type == "multipart/form-data":
            response = client.post(
                "/voice", data=start_params(), content_type=content_type, headers=headers
            )
        else:
            body = f"CallSid={SID}".encode()
            response = client.post("/voice", data=body, content_type=content_type, headers=headers)
        assert response.status_code == 415
        assert redis_snapshot(redis) == {}

    def test_multipart_mid_call_does_not_advance_the_call(
        self, client: FlaskClient, customers: Any, redis: Any
    ) -> None:
        path = start_call(client)
        before = redis_snapshot(redis)
        response = client.post(
            path,
            data=start_params(Digits=ALICE.account),
            content_type="multipart/form-data",
            headers=sign(TOKEN, BASE_URL + path, {}),
        )
        assert response.status_code == 415
        assert redis_snapshot(redis) == before

    def test_unsigned_body_of_any_kind_is_403(self, client: FlaskClient, redis: Any) -> None:
        response = client.post("/voice", data=start_params(), content_type="multipart/form-data")
        assert response.status_code == 403
        assert redis_snapshot(redis) == {}

    @pytest.mark.parametrize("repeated", ["Digits", "CallSid"])
    def test_a_repeated_parameter_is_refused_before_any_change(
        self, client: FlaskClient, customers: Any, redis: Any, repeated: str
    ) -> None:
        path = start_call(client)
        before = redis_snapshot(redis)
        audit_before = audit_events(redis)
        # Signed exactly as the twilio library signs a repeated parameter: every value counts.
        form = MultiDict(list(start_params(Digits=ALICE.account).items()))
        form.add(repeated, BOB_ACCOUNT if repeated == "Digits" else "CA" + "6b" * 16)
        signature = RequestValidator(TOKEN).compute_signature(BASE_URL + path, form)
        response = client.post(path, data=form, headers={SIGNATURE_HEADER: signature})
        assert response.status_code == 400
        assert redis_snapshot(redis) == before
        assert audit_events(redis) == audit_before

    def test_a_repeated_parameter_is_logged_by_name_only(
        self, client: FlaskClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        form = MultiDict(list(start_params(Digits="583920").items()))
        form.add("Digits", "739154")
        signature = RequestValidator(TOKEN).compute_signature(BASE_URL + "/voice", form)
        response = client.post("/voice", data=form, headers={SIGNATURE_HEADER: signature})
        assert response.status_code == 400
        warnings = [r.getMessage() for r in caplog.records if r.name == "ivr.security"]
        assert len(warnings) == 1 and "Digits" in warnings[0]
        assert "583920" not in warnings[0] and "739154" not in warnings[0]
