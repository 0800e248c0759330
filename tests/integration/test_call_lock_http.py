"""A web worker killed while it holds a call's lock does not cost the call (SECURITY 25).

Real gunicorn, real Redis. The customer's PIN hash is made deliberately slow (argon2 reads its
cost from the stored hash), so the PIN request holds the call's lock for about a second while
it verifies; the worker is SIGKILLed right then, as an OOM kill or a crashed host would. Twilio
retries the same signed request: it used to wait 8 s behind a lock left for 20 s and get the
apology; it is now answered normally, once the dead request's lock has run out.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from typing import Any

import pytest
import requests

from ivr.auth.knowledge import SecretHasher, enrol
from ivr.simulator import FAKE_ACCOUNT_SID, Gather, parse_twiml
from ivr.store.customers import Customer
from ivr.store.sessions import LOCK_TIMEOUT
from tests.support import authentications, seed_customer, sign

ACCOUNT = "12345678"
PHONE = "+14155550100"
PIN = "583920"
VERIFIED = "Thank you, you are verified"
APOLOGY = "We are sorry, we cannot take your call right now"
BOOT_AND_VERIFY = 4.0  # seconds: gunicorn starts a new worker, which verifies the slow hash


@pytest.fixture
def slow_pin_customer(redis_url: str, pepper: str) -> Customer:
    """PIN 583920, hashed at about a second's argon2 work: the request holds its lock that long."""
    hasher = SecretHasher(pepper, time_cost=60, memory_cost=32768)
    return seed_customer(
        redis_url, Customer(account=ACCOUNT, phone=PHONE, pin_hash=enrol(hasher, "pin", PIN))
    )


class Call:
    """One call driven request by request, each signed the way Twilio signs it."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        self.sid = "CA" + secrets.token_hex(16)
        self.action = "/voice"

    def request(self, digits: str | None = None) -> tuple[str, dict[str, str], dict[str, str]]:
        params = {
            "CallSid": self.sid,
            "AccountSid": FAKE_ACCOUNT_SID,
            "From": PHONE,
            "To": "+15005550001",
            "CallStatus": "in-progress",
            "Direction": "inbound",
        }
        if digits is not None:
            params["Digits"] = digits
        url = self.base_url + self.action
        return url, params, sign(self.token, url, params)

    def answer(self, digits: str | None = None) -> str:
        url, params, headers = self.request(digits)
        reply = requests.post(url, data=params, headers=headers, timeout=15)
        assert reply.status_code == 200, reply.text
        self.follow(reply.text)
        return reply.text

    def follow(self, twiml: str) -> None:
        (gather,) = [v for v in parse_twiml(twiml) if isinstance(v, Gather)]
        assert gather.action is not None
        self.action = gather.action


def test_retry_after_a_worker_killed_holding_the_lock_is_served(
    web: Any, auth_token: str, rdb: Any, slow_pin_customer: Customer
) -> None:
    call = Call(web.base_url, auth_token)
    call.answer()
    call.answer(ACCOUNT)
    call.answer("1")  # PIN
    assert call.action.startswith("/voice/step/pin?")
    url, params, headers = call.request(PIN)
    lock = f"ivr:call:{call.sid}:lock"
    outcome: list[object] = []

    def first_attempt() -> None:
        try:
            outcome.append(requests.post(url, data=params, headers=headers, timeout=15))
        except requests.ConnectionError as exc:
            outcome.append(exc)

    attempt = threading.Thread(target=first_attempt)
    attempt.start()
    deadline = time.monotonic() + 5
    while not rdb.exists(lock) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rdb.exists(lock), "the PIN request never took the call's lock"
    time.sleep(0.2)  # well inside the slow verification
    os.kill(web.worker_pid(), signal.SIGKILL)
    killed = time.monotonic()
    attempt.join(timeout=15)
    assert outcome and isinstance(outcome[0], requests.ConnectionError), outcome

    retry = requests.post(url, data=params, headers=headers, timeout=15)
    answered = time.monotonic() - killed

    assert retry.status_code == 200
    assert APOLOGY not in retry.text
    assert VERIFIED in retry.text
    assert answered < LOCK_TIMEOUT + BOOT_AND_VERIFY, f"answered {answered:.1f} s after the kill"
    assert authentications(rdb, call.sid) == [("pin", "success")]
