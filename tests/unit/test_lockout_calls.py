"""Account lockout over the voice webhooks."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from ivr.simulator import (
    CallResult,
    Keys,
    Speech,
    scripted,
)
from ivr.store.audit import AuditLog
from ivr.store.counters import FailureCounter
from tests.conftest import (
    ALICE,
    BOB,
    PlayerFactory,
    make_app,
)
from tests.support import (
    OTHER_ROUTE,
    WRONG_PIN,
    assert_never_enqueued,
    two_attempts,
    webhook_bodies,
)


class TestAccountLockout:
    @pytest.fixture
    def strict_app(self, redis: Any, customers: Any) -> Flask:
        # One number fails more often here than its abuse limit allows (tests/unit/test_abuse.py).
        return make_app(redis, account_max_failures=3, abuse_number_failures=20)

    def _call(self, player: PlayerFactory, app: Flask, *pins: str) -> CallResult:
        inputs: list[Any] = [Keys(ALICE.account + "#")]
        for pin in pins:
            inputs += [Keys("1"), Keys(pin + "#")]
        if len(pins) < 2:
            inputs.append(Keys("1"))  # the main menu, if the last PIN opened the door
        return player(app=app).play(scripted(*inputs))

    def test_correct_pin_stops_working_at_the_cap(
        self, strict_app: Flask, player: PlayerFactory, redis: Any
    ) -> None:
        self._call(player, strict_app, WRONG_PIN, WRONG_PIN)
        assert FailureCounter(redis).count(ALICE.account, "pin") == 2
        third = self._call(player, strict_app, WRONG_PIN, ALICE.pin)
        assert FailureCounter(redis).count(ALICE.account, "pin") == 3
        assert_never_enqueued(third)
        assert third.said(OTHER_ROUTE)

        locked = self._call(player, strict_app, ALICE.pin, ALICE.pin)
        assert_never_enqueued(locked)
        wrong_elsewhere = player(app=strict_app).play(
            two_attempts(BOB.account, Keys(WRONG_PIN + "#"), Keys(WRONG_PIN + "#"))
        )
        assert webhook_bodies(locked) == webhook_bodies(wrong_elsewhere)
        assert FailureCounter(redis).count(ALICE.account, "pin") == 3

        outcomes = [
            e["outcome"] for e in AuditLog(redis).recent(100) if e["event"] == "authenticate"
        ]
        assert "locked" in outcomes and "failure_locked_now" in outcomes

    def test_locked_pin_does_not_lock_the_passcode(
        self, strict_app: Flask, player: PlayerFactory, redis: Any
    ) -> None:
        for _ in range(3):
            FailureCounter(redis).add(ALICE.account, "pin")
        result = player(app=strict_app).play(
            scripted(Keys(ALICE.account + "#"), Keys("2"), Speech(ALICE.passcode), Keys("1"))
        )
        assert result.outcome == "enqueued"

    def test_success_before_the_cap_resets_the_count(
        self, strict_app: Flask, player: PlayerFactory, redis: Any
    ) -> None:
        self._call(player, strict_app, WRONG_PIN, WRONG_PIN)
        ok = self._call(player, strict_app, ALICE.pin)
        assert ok.outcome == "enqueued"
        assert FailureCounter(redis).count(ALICE.account, "pin") == 0
        self._call(player, strict_app, WRONG_PIN, WRONG_PIN)
        again = self._call(player, strict_app, ALICE.pin)
        assert again.outcome == "enqueued", again.transcript()
