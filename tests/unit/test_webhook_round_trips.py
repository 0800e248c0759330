"""Redis round trips per webhook kind, pinned: a whole SMS step-up call, request by request.

Each round trip is latency the caller hears (under the call's lock) and CPU the web process
spends in redis-py; issue 9 measured them as most of a cheap webhook's cost. A request takes
its call in one round trip (the lock, the session and the line signals together) and saves and
releases it in one. Counted at redis-py's connection, one `send_packed_command` per round trip
(a pipeline or a script is one), on a second call so scripts are warm. A connection's
handshake (HELLO, CLIENT SETINFO) is not counted: a pool makes it once per connection, and here
the in-process worker's jobs make the pool reconnect between requests.

A count that grows fails here: make it one logical step (a pipeline, a script) or change the
pin on purpose, in the same commit as the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.connection

from ivr.simulator import CallPlayer, Keys, Reply, TimedTransport
from tests.conftest import up_to_card_check
from tests.support import Handset, StrictTurns

#: (path, kind) of each request of the call, in order, with its round trips.
PINNED = [
    # A request's audit events go in the round trip of its save (`AuditLog.batched`).
    ("/voice", "initial /voice", 3),  # take, live version, save (+ call_started audit)
    ("/voice/step/identify", "identify", 3),  # take, customer, save (+ identify audit)
    ("/voice/step/choose_method", "menu, offers a method", 2),  # take, save (+ offered audit)
    ("/voice/step/pin", "pin attempt", 7),  # + abuse admit, customer, counter, release
    ("/voice/step/main_menu", "menu", 2),  # take, save
    ("/voice/step/card_check", "code request", 9),  # + backlog, send caps, delivery, rq enqueue
    ("/voice/poll/sms_code", "hold poll", 3),  # take, delivery status, save
    ("/voice/step/sms_code", "code attempt", 9),
    ("/voice/status", "status callback", 1),  # mark the call over
]


HANDSHAKE = (b"HELLO", b"CLIENT")


class Counting:
    """Round trips sent while each request of the call ran."""

    def __init__(self) -> None:
        self.sent = 0
        self.per_request: list[tuple[str, int]] = []

    def wrap(self, transport: Any) -> Any:
        counter = self

        class Counted(TimedTransport):
            def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
                before = counter.sent
                reply = super().post(url, params, headers)
                counter.per_request.append((urlsplit(url).path, counter.sent - before))
                return reply

        return Counted(transport)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counting]:
    counts = Counting()
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, *args: Any, **kwargs: Any) -> None:
        first = bytes(command[0] if isinstance(command, list) else command)
        if not any(name in first[:40] for name in HANDSHAKE):
            counts.sent += 1
        send(self, command, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    yield counts


def sms_step_up(handset: Handset) -> StrictTurns:
    return StrictTurns(
        *up_to_card_check(), ("card_check", Keys("1")), ("sms_code", handset.key_in_latest)
    )


def test_each_webhook_kind_keeps_its_round_trips(
    caller: Callable[..., CallPlayer], handset: Handset, counting: Counting
) -> None:
    warm = caller()
    assert warm.play(sms_step_up(handset)).queue == "card-services"
    counting.per_request.clear()
    call = caller()  # a second call of Alice's: her PIN and code budgets were reset by success
    call.transport = counting.wrap(call.transport)
    result = call.play(sms_step_up(handset))

    assert result.queue == "card-services"
    expected = [(path, f"{kind}: {trips}") for path, kind, trips in PINNED]
    kinds = {path: kind for path, kind, _ in PINNED}
    got = [(path, f"{kinds.get(path, '?')}: {trips}") for path, trips in counting.per_request]
    assert got == expected
