"""Whole calls over the voice webhooks, and unknown accounts that sound like a wrong PIN."""

from __future__ import annotations

from typing import Any

import pytest

from ivr.runtime import Runtime
from ivr.simulator import (
    Keys,
    Speech,
    scripted,
)
from ivr.store.counters import FailureCounter
from tests.conftest import (
    ALICE,
    BOB,
    PIN_CALL,
    PlayerFactory,
)
from tests.support import (
    DID_NOT_MATCH,
    OTHER_ROUTE,
    VERIFIED,
    WRONG_PIN,
    assert_never_enqueued,
    auth_events,
    state_of,
    two_attempts,
    webhook_bodies,
)

UNKNOWN_ACCOUNT = "99999999"


class TestWholeCalls:
    def test_pin_reaches_the_chosen_queue(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        result = player().play(scripted(*PIN_CALL))
        assert result.outcome == "enqueued", result.transcript(requests=True)
        assert result.queue == "balances"
        assert result.said(VERIFIED)
        assert result.said("Connecting you to an agent who can help with your balance")
        assert [e["outcome"] for e in auth_events(runtime)] == ["success"]
        assert result.status_callback is not None and result.status_callback.status == 204

    @pytest.mark.parametrize(
        ("choice", "queue"),
        [(Keys("1"), "balances"), (Speech("my balance"), "balances"), (Keys("0"), "general")],
    )
    def test_each_menu_choice_has_its_queue(
        self, player: PlayerFactory, customers: Any, choice: Any, queue: str
    ) -> None:
        script = scripted(Keys(ALICE.account + "#"), Keys("1"), Keys(ALICE.pin + "#"), choice)
        result = player().play(script)
        assert result.outcome == "enqueued"
        assert result.queue == queue

    def test_a_card_change_is_stepped_up_not_enqueued_on_a_pin_alone(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("1"),
            Keys(ALICE.pin + "#"),
            Speech("card"),
            None,
            None,
            None,
        )
        result = player().play(script)
        assert result.said("Card changes need one more check")
        assert result.outcome == "hung_up"
        assert all("<Enqueue" not in body for body in result.responses)

    def test_passcode_by_speech(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Speech("passcode"),
            Speech("Purple elephant, forty-two.", confidence=0.9),
            Speech("I want an agent please"),
        )
        result = player().play(script)
        assert result.outcome == "enqueued", result.transcript(requests=True)
        assert result.queue == "general"
        assert [(e["method"], e["outcome"]) for e in auth_events(runtime)] == [
            ("passcode", "success")
        ]

    def test_caller_id_star_pound_uses_the_calling_number(
        self, player: PlayerFactory, customers: Any, runtime: Runtime, redis: Any
    ) -> None:
        p = player(from_number=ALICE.phone)
        result = p.play(scripted(Keys("*#"), Keys("1"), Keys(ALICE.pin + "#"), Keys("1")))
        assert result.outcome == "enqueued", result.transcript(requests=True)
        assert result.queue == "balances"
        assert state_of(redis, p.call_sid).account == ALICE.account
        # The prompt tells the caller this is how caller ID is used.
        assert result.said("press star, pound")

    def test_caller_id_from_unknown_number_cannot_use_a_pin(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        script = scripted(
            Keys("*#"), Keys("1"), Keys(ALICE.pin + "#"), Keys("1"), Keys(ALICE.pin + "#")
        )
        result = player(from_number="+14155550111").play(script)
        assert result.said(OTHER_ROUTE)
        assert_never_enqueued(result)

    def test_caller_id_identifies_but_does_not_authenticate(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        script = scripted(Keys("*#"), Keys("1"), Keys(WRONG_PIN + "#"), Keys("1"), Keys("123987#"))
        result = player(from_number=ALICE.phone).play(script)
        assert result.said(OTHER_ROUTE)
        assert_never_enqueued(result)

    def test_two_wrong_pins_end_authentication(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("1"),
            Keys(WRONG_PIN + "#"),
            Keys("1"),
            Keys("123987#"),
        )
        result = player().play(script)
        assert result.said(DID_NOT_MATCH)
        assert result.said("You have 1 attempt left")
        assert result.said(OTHER_ROUTE)
        assert result.outcome == "hung_up"
        assert_never_enqueued(result)
        assert script.remaining == []
        assert [e["outcome"] for e in auth_events(runtime)] == ["failure", "failure"]

    def test_wrong_pin_then_wrong_passcode_ends_too(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("1"),
            Keys(WRONG_PIN + "#"),
            Keys("2"),
            Speech("orange tiger seven", confidence=0.95),
        )
        result = player().play(script)
        assert result.said(OTHER_ROUTE)
        assert result.outcome == "hung_up"
        assert_never_enqueued(result)
        assert [(e["method"], e["outcome"]) for e in auth_events(runtime)] == [
            ("passcode", "failure"),  # newest first
            ("pin", "failure"),
        ]

    def test_correct_secret_after_the_budget_is_spent_is_never_asked(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        # The right PIN as a third attempt is never even requested: the call is over.
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("1"),
            Keys(WRONG_PIN + "#"),
            Keys("1"),
            Keys(WRONG_PIN + "#"),
            Keys("1"),
            Keys(ALICE.pin + "#"),
        )
        result = player().play(script)
        assert_never_enqueued(result)
        assert len(script.remaining) == 2

    def test_low_confidence_counts_as_a_failure(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("2"),
            Speech("Purple elephant, forty-two.", confidence=0.3),
            Keys("2"),
            Speech("Purple elephant, forty-two.", confidence=0.2),
        )
        result = player().play(script)
        assert result.said(DID_NOT_MATCH)
        assert result.said(OTHER_ROUTE)
        assert_never_enqueued(result)
        assert [e["outcome"] for e in auth_events(runtime)] == ["failure", "failure"]

    def test_low_confidence_then_clear_answer_succeeds(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        script = scripted(
            Keys(ALICE.account + "#"),
            Keys("2"),
            Speech("Purple elephant, forty-two.", confidence=0.3),
            Keys("2"),
            Speech("purple elephant four two", confidence=0.9),
            Keys("0"),
        )
        result = player().play(script)
        assert result.outcome == "enqueued", result.transcript(requests=True)
        assert result.said("You have 1 attempt left")
        assert [e["outcome"] for e in auth_events(runtime)] == ["success", "failure"]
        assert FailureCounter(runtime.redis).count(ALICE.account, "passcode") == 0

    def test_silence_reprompts_then_gives_up_politely(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        result = player().play(scripted(None, None, None))
        assert result.said("We did not receive a response")
        assert result.outcome == "hung_up"
        assert_never_enqueued(result)


class TestNoEnumeration:
    @pytest.mark.parametrize("unknown", [UNKNOWN_ACCOUNT, "000000", "123456789012"])
    def test_unknown_account_sounds_like_wrong_pin(
        self, player: PlayerFactory, customers: Any, unknown: str
    ) -> None:
        unknown_player, known_player = player(), player()
        unknown_call = unknown_player.play(
            two_attempts(unknown, Keys(ALICE.pin + "#"), Keys(BOB.pin + "#"))
        )
        wrong_call = known_player.play(
            two_attempts(ALICE.account, Keys(WRONG_PIN + "#"), Keys("123987#"))
        )
        assert webhook_bodies(unknown_call) == webhook_bodies(wrong_call)
        assert unknown_call.said(OTHER_ROUTE)
        for body in webhook_bodies(unknown_call) + webhook_bodies(wrong_call):
            assert unknown_player.call_sid not in body
            assert known_player.call_sid not in body
            assert ALICE.account not in body and unknown not in body

    def test_unknown_account_sounds_like_wrong_passcode(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        passcode = Speech(ALICE.passcode)
        unknown_call = player().play(two_attempts(UNKNOWN_ACCOUNT, passcode, passcode, "2"))
        wrong_call = player().play(
            two_attempts(ALICE.account, Speech("blue whale 7"), Speech("red fox 9"), "2")
        )
        assert webhook_bodies(unknown_call) == webhook_bodies(wrong_call)

    def test_caller_id_unknown_number_sounds_like_known_number(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        script = (Keys("*#"), Keys("1"), Keys(WRONG_PIN + "#"), Keys("1"), Keys(WRONG_PIN + "#"))
        unknown = player(from_number="+14155550111").play(scripted(*script))
        known = player(from_number=ALICE.phone).play(scripted(*script))
        assert webhook_bodies(unknown) == webhook_bodies(known)

    def test_account_without_that_factor_sounds_like_wrong_secret(
        self, player: PlayerFactory, customers: Any, runtime: Runtime
    ) -> None:
        runtime.customers.update(BOB.account, pin_hash=None)
        no_pin = player().play(two_attempts(BOB.account, Keys(BOB.pin + "#"), Keys(BOB.pin + "#")))
        wrong = player().play(
            two_attempts(ALICE.account, Keys(WRONG_PIN + "#"), Keys(WRONG_PIN + "#"))
        )
        assert webhook_bodies(no_pin) == webhook_bodies(wrong)
        assert_never_enqueued(no_pin)
