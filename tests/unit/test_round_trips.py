"""Redis round trips on the webhook's hot path: each call's lock, save, abuse check and claim.

Every webhook runs under its call's lock, and Twilio waits for the answer: a command each step
is latency each caller hears. Counted at redis-py's connection (one `send_packed_command` is one
round trip, a pipeline or script included), after one warm-up so registered scripts are loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.connection

from ivr.flows.engine import CallState
from ivr.runtime import Runtime, make_abuse_guard
from ivr.store.codes import CodeStore
from ivr.store.sessions import SessionStore
from tests.conftest import ALICE, BASE_URL, TOKEN, DemoCustomer
from tests.support import sign

SID = "CA" + "7a" * 16


class Sent:
    """Every command batch redis-py sends, as the bytes on the wire."""

    def __init__(self) -> None:
        self.batches: list[bytes] = []

    def __len__(self) -> int:
        return len(self.batches)

    def clear(self) -> None:
        self.batches.clear()

    def mention(self, text: bytes) -> list[bytes]:
        return [b for b in self.batches if text in b]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sent]:
    log = Sent()
    send = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, *args: Any, **kwargs: Any) -> None:
        parts = command if isinstance(command, list) else [command]
        log.batches.append(b"".join(bytes(p) for p in parts))
        send(self, command, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    yield log


def warm(action: Callable[[], object], sent: Sent) -> int:
    """Round trips of `action` the second time: the first loads the scripts it uses."""
    action()
    sent.clear()
    action()
    return len(sent)


def state(account: str | None = ALICE.account) -> CallState:
    return CallState(call_sid=SID, caller="+14155550100", step="pin", account=account)


def test_a_request_takes_and_saves_its_call_in_two_round_trips(redis: Any, sent: Sent) -> None:
    """The lock and the call's reads together; the fenced save releases the lock."""
    store = SessionStore(redis, 600)

    def request() -> None:
        with store.take(SID) as taken:
            store.save(state(), 0, "<Response/>", taken.lock)

    assert warm(request, sent) == 2


def test_admitting_an_attempt_is_one_round_trip(runtime: Runtime, sent: Sent) -> None:
    guard = make_abuse_guard(runtime.settings, runtime.redis, runtime.audit)
    assert warm(lambda: guard.admit(state()), sent) == 1


def test_abandoning_sends_is_one_round_trip(redis: Any, sent: Sent) -> None:
    store = CodeStore(redis)
    store.open_delivery(SID, "sms_otp", "1", claim=ALICE.account, deadline=0.0, ttl=60)
    assert warm(lambda: store.abandon(SID, "sms_otp", "email_otp", "callback"), sent) == 1


def test_the_first_claim_of_a_call_touches_no_delivery(
    client: Any, customers: dict[str, DemoCustomer], sent: Sent
) -> None:
    """Nothing was sent for a claim the call never had: nothing to void."""
    post(client, "/voice")
    sent.clear()
    post(client, "/voice/step/identify?seq=0", Digits=ALICE.account)
    assert sent.mention(b"ivr:delivery:") == []
    assert sent.mention(b"ivr:otp:") == []


def post(client: Any, path: str, **params: str) -> None:
    params = {"CallSid": SID, "From": ALICE.phone, **params}
    reply = client.post(path, data=params, headers=sign(TOKEN, BASE_URL + path, params))
    assert reply.status_code == 200
