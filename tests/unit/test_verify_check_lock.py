"""A Twilio Verify check happens while the caller waits, under the call's lock (SECURITY 25).

The web process asks Twilio whether the keyed code is right inside the request, holding the
call's lock. The lock lived 3 s while the check could take 10 s to connect and 10 s more to
answer: a slow but successful check found the lock gone, the request could not save, and the
customer who keyed the right code heard the apology and was hung up on. Checked here at the
twilio client's HTTP boundary (requests), where the check is sent: the lock must outlive the
longest answer the check will wait for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from ivr.flows.engine import CallState
from ivr.runtime import Runtime
from ivr.runtime import runtime as current_runtime
from ivr.store import keys
from ivr.store.codes import VERIFY_MARK
from tests.conftest import ALICE, BASE_URL, TOKEN, enrol, make_app
from tests.support import sign

SID = "CA" + "5a" * 16
VERIFY_SETTINGS = {
    "sms_backend": "verify",
    "twilio_account_sid": "AC" + "0" * 32,
    "verify_service_sid": "VA" + "0" * 32,
}


@pytest.fixture
def app(redis: Any, outbox_path: Path) -> Flask:
    flask_app = make_app(redis, outbox=outbox_path, **VERIFY_SETTINGS)
    flask_app.config["TESTING"] = True
    return flask_app


@pytest.fixture
def rt(app: Flask) -> Iterator[Runtime]:
    with app.app_context():
        yield current_runtime()


class VerifyApproves:
    """Twilio Verify as the web process reaches it over HTTP: every check is "approved".

    Records, per request, the most the client will wait for the answer and how long the call's
    lock still had to live when the request left."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.seen: list[tuple[str, float, float]] = []

    def send(self, request: Any, **kwargs: Any) -> requests.Response:
        timeout = kwargs.get("timeout")
        waits = sum(timeout) if isinstance(timeout, tuple) else 2 * float(timeout or 1e9)
        lock_left = self.redis.pttl(keys.call_lock(SID)) / 1000
        self.seen.append((request.url, waits, lock_left))
        response = requests.Response()
        response.status_code = 201
        response._content = json.dumps({"status": "approved", "sid": "VE" + "0" * 32}).encode()
        response.headers["Content-Type"] = "application/json"
        return response


def at_the_sms_step(rt: Runtime) -> None:
    """A call of Alice's that has proved her PIN and was texted a code by Twilio Verify."""
    enrol(rt, ALICE)
    state = CallState(SID, ALICE.phone, "sms_code", seq=7, account=ALICE.account, proofs=["pin"])
    with rt.sessions.locked(SID) as lock:
        rt.sessions.save(state, 6, "<Response/>", lock)
    rt.possession.codes.issue_otp(SID, "sms_otp", VERIFY_MARK, 600)


def test_the_lock_outlives_the_longest_verify_check(
    client: FlaskClient, rt: Runtime, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    at_the_sms_step(rt)
    twilio = VerifyApproves(redis)
    monkeypatch.setattr(requests.Session, "send", twilio.send)
    path = "/voice/step/sms_code?seq=7"
    params = {"CallSid": SID, "Digits": "123456"}
    reply = client.post(path, data=params, headers=sign(TOKEN, BASE_URL + path, params))

    assert reply.status_code == 200
    assert "<Enqueue" in reply.get_data(as_text=True)  # the right code opens the door
    [(url, waits, lock_left)] = twilio.seen
    assert "VerificationCheck" in url
    assert waits < lock_left, (
        f"the Verify check may wait {waits:g} s for Twilio, the call's lock has {lock_left:g} s"
    )
