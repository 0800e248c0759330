"""Whole calls while the workers are far behind: the caller is told at once, not after a hold.

The queue is worked oldest first, so when its oldest send has waited a whole hold already, a
send queued now would not go out within the step's `max_wait` (a call back, within
`CALLBACK_WITHIN`): the caller hears the step's unavailable prompt straight away and is offered
another method, and the send is neither queued nor counted against the caps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from rq import Queue

from ivr.auth.possession import CALLBACK_WITHIN
from ivr.processes import QUEUE
from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, CallResult, Keys
from ivr.store import keys
from tests.conftest import ALICE, BOB, DemoCustomer, up_to_card_check
from tests.support import (
    CARD_CHECK,
    HOLD_SMS,
    NO_SMS,
    StrictTurns,
    audit_events,
    heard_in_order,
    pauses,
    polls,
    silent,
)

NO_CALL_BACK = "Sorry, we cannot call you back right now."


def queued(runtime: Runtime) -> int:
    return Queue(QUEUE, connection=runtime.redis).count


def text_me(caller: Callable[..., CallPlayer], who: DemoCustomer = ALICE) -> tuple[CallResult, str]:
    """A call asking for a text while no worker runs: what it heard, and its CallSid."""
    turns = StrictTurns(
        *up_to_card_check(who.pin, who.account), ("card_check", Keys("1")), *silent("card_check")
    )
    player = caller(who.phone, worker=False)
    result = player.play(turns)
    assert turns.done
    return result, player.call_sid


def later(runtime: Runtime, seconds: float) -> None:
    """The web's clock moves on (the queued send meanwhile waits, as no worker takes it)."""
    runtime.possession.clock = lambda: time.time() + seconds


def backlogged(runtime: Runtime, call_sid: str) -> list[str]:
    return [
        e["method"]
        for e in audit_events(runtime.redis, call_sid)
        if e.get("outcome") == "send_backlogged"
    ]


class TestBackedUpQueue:
    def test_a_send_behind_one_that_waited_a_whole_hold_is_refused_at_once(
        self, caller: Callable[..., CallPlayer], runtime: Runtime
    ) -> None:
        first, _ = text_me(caller)
        assert heard_in_order(first, HOLD_SMS, NO_SMS)  # held the whole max_wait: nobody works
        max_wait = runtime.flow.steps["sms_code"].max_wait  # type: ignore[union-attr]
        later(runtime, max_wait)

        second, call_sid = text_me(caller, BOB)
        assert HOLD_SMS not in second.heard
        assert pauses(second) == 0 and polls(second) == 0
        assert heard_in_order(second, CARD_CHECK, NO_SMS, CARD_CHECK)
        assert queued(runtime) == 1  # only the first call's send
        assert backlogged(runtime, call_sid) == ["sms_otp"]
        assert runtime.redis.get(keys.sends("account", BOB.account)) is None  # not counted

    def test_a_queue_behind_by_less_than_a_hold_still_takes_the_send(
        self, caller: Callable[..., CallPlayer], runtime: Runtime
    ) -> None:
        text_me(caller)
        max_wait = runtime.flow.steps["sms_code"].max_wait  # type: ignore[union-attr]
        later(runtime, max_wait - 2)
        second, call_sid = text_me(caller, BOB)
        assert heard_in_order(second, HOLD_SMS)
        assert backlogged(runtime, call_sid) == []
        assert queued(runtime) == 2

    @pytest.mark.parametrize(
        ("behind", "refused"), [(CALLBACK_WITHIN - 1, False), (CALLBACK_WITHIN, True)]
    )
    def test_a_call_back_that_could_not_be_placed_in_time_is_refused(
        self, caller: Callable[..., CallPlayer], runtime: Runtime, behind: int, refused: bool
    ) -> None:
        text_me(caller)
        later(runtime, behind)
        player = caller(BOB.phone, worker=False)
        turns = StrictTurns(
            *up_to_card_check(BOB.pin, BOB.account),
            ("card_check", Keys("3")),
            *(silent("card_check") if refused else []),  # else: the call back is on its way
        )
        result = player.play(turns)
        assert turns.done
        assert (NO_CALL_BACK in " ".join(result.heard)) is refused
        assert queued(runtime) == (1 if refused else 2)
