"""The audit trail of a real call: gunicorn, a real rq worker process, a real redis-server.

A caller proves a PIN, asks for a card change and is stepped up with a texted code. The trail
of the call is then read three ways, and they must agree: the Redis stream `ivr:audit`, the JSON
lines in the web process's log, and the worker's JSON line for the send it made.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from ivr.auth.knowledge import SecretHasher, enrol
from ivr.outbox import Outbox
from ivr.simulator.phone import Phone
from ivr.store.audit import log_line
from ivr.store.customers import Customer
from tests.support import audit_events, contains_code, make_player, queue_caller, seed_customer

ACCOUNT = "12345678"
PHONE = "+14155550100"
PIN = "583920"
CALLER = "+14155550123"

STEPPED_UP = [
    ("call_started", "", ""),
    ("identify", "", "matched"),
    ("offered", "pin", ""),
    ("authenticate", "pin", "success"),
    ("step_up", "sms_otp", ""),
    ("offered", "sms_otp", ""),
    ("delivery", "sms_otp", "send_requested"),
    ("delivery", "sms_otp", "sent"),  # the worker's
    ("authenticate", "sms_otp", "success"),
    ("enqueued", "pin,sms_otp", ""),
]
LOG_WAIT = 5.0


@pytest.fixture
def env(outbox_path: Path) -> dict[str, str]:
    return {"IVR_OUTBOX": str(outbox_path)}


@pytest.fixture
def web(web_factory: Any, env: dict[str, str]) -> Any:
    return web_factory(env)


@pytest.fixture
def worker(worker_factory: Any, env: dict[str, str]) -> Any:
    return worker_factory(env)


def audit_lines(proc: Any, call_sid: str, count: int) -> list[dict[str, str]]:
    """The JSON lines of `call_sid` in the process's log, once there are `count` of them."""
    deadline = time.monotonic() + LOG_WAIT
    while True:
        lines = []
        for line in proc.log().splitlines():
            if line.startswith("{"):
                parsed = json.loads(line)  # the whole line is one JSON object
                if parsed.get("call_sid") == call_sid:
                    lines.append(parsed)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_a_stepped_up_call_leaves_its_trail_in_the_stream_and_the_logs(
    redis_url: str,
    rdb: redis.Redis,
    auth_token: str,
    pepper: str,
    outbox_path: Path,
    web: Any,
    worker: Any,
) -> None:
    seed_customer(
        redis_url,
        Customer(account=ACCOUNT, phone=PHONE, pin_hash=enrol(SecretHasher(pepper), "pin", PIN)),
    )
    phone = Phone(Outbox(outbox_path))

    call = make_player(web.base_url, auth_token, from_number=CALLER)
    result = call.play(queue_caller(ACCOUNT, PIN, "card-services by sms", phone.latest_code))
    assert result.queue == "card-services", result.transcript()
    code = phone.latest_code()
    assert code is not None

    stream = audit_events(rdb, call.call_sid)
    assert [(e["event"], e.get("method", ""), e.get("outcome", "")) for e in stream] == STEPPED_UP
    step_up, enqueued = stream[4], stream[-1]
    assert (step_up["assurance"], step_up["detail"]) == ("one_factor", "step=sms_code")
    assert (enqueued["queue"], enqueued["assurance"]) == ("card-services", "two_factor")

    # The web process logged every event it recorded, the worker the send it made: each the
    # stream's entry as one JSON line, with the calling number and the account masked.
    sent = stream.index(next(e for e in stream if e.get("outcome") == "sent"))
    from_web = stream[:sent] + stream[sent + 1 :]
    assert audit_lines(web, call.call_sid, len(from_web)) == [
        json.loads(log_line(e)) for e in from_web
    ]
    assert audit_lines(worker, call.call_sid, 1) == [json.loads(log_line(stream[sent]))]

    for proc in (web, worker):
        log = proc.log()
        for secret in (PIN, code, PHONE, CALLER, ACCOUNT):
            assert not contains_code(log, secret), f"{secret} in the log of {proc}"
    blob = json.dumps(stream)
    assert not contains_code(blob, PIN) and not contains_code(blob, code)
