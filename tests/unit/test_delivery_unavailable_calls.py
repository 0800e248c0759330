"""Whole calls whose code cannot be sent (no worker, provider failure, send cap): another method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from rq import Queue

from ivr.processes import QUEUE
from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, CallResult, Keys
from ivr.store import keys
from tests.conftest import (
    ALICE,
    up_to_card_check,
)
from tests.support import (
    CARD_CHECK,
    CARD_SERVICES,
    HOLD_EMAIL,
    HOLD_SMS,
    NO_SMS,
    Handset,
    StrictTurns,
    assert_card_services,
    assert_never_enqueued,
    heard_in_order,
    pauses,
    polls,
    silent,
)

NO_EMAIL = "Sorry, we cannot send an email right now."


def held_seconds(result: CallResult) -> int:
    return sum(int(line.split()[-1].rstrip("s")) for kind, line in result.log if kind == "pause")


def queued_jobs(redis: Any) -> int:
    return Queue(QUEUE, connection=redis).count


class TestDeliveryUnavailable:
    @pytest.mark.parametrize(
        ("choice", "step", "hold", "sorry", "max_wait"),
        [("1", "sms_code", HOLD_SMS, NO_SMS, 12), ("2", "email_code", HOLD_EMAIL, NO_EMAIL, 16)],
        ids=["sms", "email"],
    )
    def test_no_worker_the_caller_is_offered_another_method(
        self,
        caller: Callable[..., CallPlayer],
        handset: Handset,
        runtime: Runtime,
        choice: str,
        step: str,
        hold: str,
        sorry: str,
        max_wait: int,
        email_app: Flask,
    ) -> None:
        app = email_app if step == "email_code" else None
        flow = (app.extensions["ivr"] if app else runtime).flow
        assert flow.steps[step].max_wait == max_wait  # type: ignore[union-attr]
        turns = StrictTurns(
            *up_to_card_check(), ("card_check", Keys(choice)), *silent("card_check")
        )
        result = caller(worker=False, app=app).play(turns)
        assert turns.done
        assert heard_in_order(result, hold, sorry, CARD_CHECK)
        assert held_seconds(result) == max_wait  # 1 s first, then 2 s at a time, never longer
        assert polls(result) == max_wait // 2 + 1
        assert handset.messages() == []
        assert queued_jobs(runtime.redis) == 1  # still waiting for a worker
        assert_never_enqueued(result)

    def test_provider_failure_offers_another_method_at_once(
        self,
        caller: Callable[..., CallPlayer],
        handset: Handset,
        monkeypatch: pytest.MonkeyPatch,
        email_app: Flask,
    ) -> None:
        monkeypatch.setenv("IVR_SMS_BACKEND", "twilio")  # and no IVR_SMS_FROM: fails for good
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("card_check", Keys("2")),  # the email works
            ("email_code", handset.key_in_latest),
        )
        result = caller(app=email_app).play(turns)
        assert turns.done
        assert heard_in_order(result, HOLD_SMS, NO_SMS, CARD_CHECK, HOLD_EMAIL, CARD_SERVICES)
        assert [m.channel for m in handset.messages()] == ["email"]
        assert_card_services(result)

    def test_send_cap_reached_is_unavailable_at_once(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        limit = runtime.settings.send_limit_account
        runtime.redis.set(keys.sends("account", ALICE.account), limit, ex=600)
        turns = StrictTurns(*up_to_card_check(), ("card_check", Keys("1")), *silent("card_check"))
        result = caller().play(turns)
        assert turns.done
        assert HOLD_SMS not in result.heard
        assert pauses(result) == 0 and polls(result) == 0
        assert heard_in_order(result, CARD_CHECK, NO_SMS, CARD_CHECK)
        assert handset.messages() == []
        assert queued_jobs(runtime.redis) == 0
        assert_never_enqueued(result)
