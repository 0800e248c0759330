"""Whole calls that step up with an emailed code."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, Keys
from tests.conftest import (
    ALICE,
    up_to_card_check,
)
from tests.support import (
    HOLD_EMAIL,
    Handset,
    StrictTurns,
    assert_card_services,
    auth_outcomes,
    code_nowhere_but_digits,
    heard_in_order,
)


class TestEmailCode:
    def test_code_reaches_card_services(
        self,
        caller: Callable[..., CallPlayer],
        handset: Handset,
        runtime: Runtime,
        email_app: Flask,
    ) -> None:
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("2")),
            ("email_code", handset.key_in_latest),
        )
        result = caller(app=email_app).play(turns)
        assert turns.done
        assert_card_services(result)
        assert heard_in_order(result, HOLD_EMAIL, "Please enter the code we emailed you")
        [email] = handset.messages()
        assert (email.channel, email.to) == ("email", ALICE.email)
        code_nowhere_but_digits(result, handset.used[0])
        assert auth_outcomes(runtime, "email_otp") == ["success"]
