"""Whole calls that step up with a texted code, and asking for it again."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, Keys, Speech
from tests.conftest import (
    ALICE,
    BOB,
    up_to_card_check,
)
from tests.support import (
    CARD_CHECK,
    CARD_SERVICES,
    CODE_WRONG,
    HOLD_SMS,
    NO_SMS,
    WRONG_PIN,
    Handset,
    StrictTurns,
    assert_card_services,
    assert_never_enqueued,
    assert_not_in_redis,
    auth_outcomes,
    code_nowhere_but_digits,
    heard_in_order,
    polls,
    silent,
)

ENTER_SMS = "Please enter the code we sent you"


PIN_WRONG = "That did not match our records. You have 1 attempt left."


OTHER_ROUTE = "We could not verify your identity on this call"


class TestSmsCode:
    def test_code_reaches_card_services(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_latest),
        )
        result = caller().play(turns)
        assert turns.done
        assert_card_services(result)
        assert heard_in_order(result, CARD_CHECK, HOLD_SMS, ENTER_SMS, CARD_SERVICES)
        assert polls(result) == 1  # the worker delivered during the first hold
        [sms] = handset.messages()
        assert (sms.channel, sms.to) == ("sms", ALICE.phone)
        [code] = handset.used
        code_nowhere_but_digits(result, code)
        assert_not_in_redis(runtime.redis, code)
        assert auth_outcomes(runtime, "sms_otp") == ["success"]

    def test_called_from_another_phone_the_code_goes_to_the_phone_on_file(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_latest),
        )
        result = caller(BOB.phone).play(turns)
        assert_card_services(result)
        assert [m.to for m in handset.messages()] == [ALICE.phone]

    def test_spoken_menu_choice_works_too(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Speech("text message")),
            ("sms_code", handset.key_in_latest),
        )
        assert_card_services(caller().play(turns))

    def test_a_wrong_code_counts_one_failure(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_wrong),
            ("card_check", Keys("1")),  # a new code, the failure still counted
            ("sms_code", handset.key_in_latest),
        )
        result = caller().play(turns)
        assert turns.done
        assert heard_in_order(result, HOLD_SMS, CODE_WRONG, CARD_CHECK, HOLD_SMS, CARD_SERVICES)
        assert_card_services(result)
        assert len(handset.messages("sms")) == 2
        assert auth_outcomes(runtime, "sms_otp") == ["failure", "success"]

    def test_pin_and_code_failures_share_the_budget(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = StrictTurns(
            ("identify", Keys(ALICE.account + "#")),
            ("choose_method", Keys("1")),
            ("pin", Keys(WRONG_PIN + "#")),
            ("choose_method", Keys("1")),
            ("pin", Keys(ALICE.pin + "#")),
            ("main_menu", Keys("2")),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_wrong),
        )
        result = caller().play(turns)
        assert turns.done
        assert heard_in_order(result, PIN_WRONG, HOLD_SMS, OTHER_ROUTE)
        assert CODE_WRONG not in result.heard
        assert result.outcome == "hung_up"
        assert_never_enqueued(result)

    def test_a_code_from_one_call_fails_in_another(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        first = StrictTurns(*up_to_card_check(), ("card_check", Keys("1")), *silent("sms_code"))
        result = caller().play(first)
        assert first.done
        assert_never_enqueued(result)
        second = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_earlier),  # the first call's code
            *silent("card_check"),
        )
        result = caller().play(second)
        assert second.done
        codes = handset.codes()
        assert len(codes) == 2
        if codes[0] == codes[1]:  # one chance in a million
            pytest.skip("both calls happened to draw the same code")
        assert heard_in_order(result, HOLD_SMS, CODE_WRONG, CARD_CHECK)
        assert_never_enqueued(result)
        assert auth_outcomes(runtime, "sms_otp") == ["failure"]

    def test_silence_at_the_code_prompt_sends_no_new_code(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", None),
            ("sms_code", handset.key_in_latest),
        )
        result = caller().play(turns)
        assert turns.done
        assert_card_services(result)
        assert len(handset.messages()) == 1
        assert sum(HOLD_SMS in text for text in result.heard) == 1
        assert auth_outcomes(runtime, "sms_otp") == ["success"]

    def test_a_second_wrong_code_ends_authentication(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_wrong),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_wrong),
        )
        result = caller().play(turns)
        assert turns.done
        assert result.heard[-1].startswith(OTHER_ROUTE)
        assert_never_enqueued(result)


class TestResend:
    def test_resend_sends_a_new_code_that_works(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", Keys("*#")),
            ("sms_code", handset.key_in_latest),
        )
        result = caller().play(turns)
        assert turns.done
        assert_card_services(result)
        assert heard_in_order(result, HOLD_SMS, ENTER_SMS, HOLD_SMS, ENTER_SMS, CARD_SERVICES)
        assert len(handset.messages("sms")) == 2
        assert polls(result) == 2

    def test_the_code_before_a_resend_no_longer_works(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", Keys("*#")),
            ("sms_code", handset.key_in_earlier),
            *silent("card_check"),
        )
        result = caller().play(turns)
        assert turns.done
        first, second = handset.codes()
        if first == second:  # one chance in a million
            pytest.skip("the resend happened to draw the same code")
        assert heard_in_order(result, HOLD_SMS, HOLD_SMS, CODE_WRONG, CARD_CHECK)
        assert_never_enqueued(result)
        assert auth_outcomes(runtime, "sms_otp") == ["failure"]

    def test_a_resend_keeps_the_failure_count(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_wrong),  # failure 1
            ("card_check", Keys("1")),
            ("sms_code", Keys("*#")),  # resend
            ("sms_code", handset.key_in_wrong),  # failure 2: the budget is spent
        )
        result = caller().play(turns)
        assert turns.done
        assert heard_in_order(result, CODE_WRONG, HOLD_SMS, HOLD_SMS, OTHER_ROUTE)
        assert len(handset.messages("sms")) == 3
        assert_never_enqueued(result)

    def test_resends_are_capped(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        limit = min(runtime.settings.send_limit_account, runtime.settings.code_requests_per_call)
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            *[("sms_code", Keys("*#"))] * limit,  # the last of these is one send too many
            *silent("card_check"),
        )
        result = caller().play(turns)
        assert turns.done
        assert len(handset.messages("sms")) == limit
        assert sum(HOLD_SMS in text for text in result.heard) == limit
        assert heard_in_order(result, *[HOLD_SMS] * limit, NO_SMS, CARD_CHECK)
        assert_never_enqueued(result)
