"""The engine's first steps: the welcome, identifying the account, the method menu."""

from __future__ import annotations

import pytest

from ivr.assurance import Assurance
from ivr.flows.engine import (
    Ask,
    CallerInput,
    Engine,
    Hangup,
    Say,
)
from tests.engine_fakes import (
    ALICE,
    ALICE_PHONE,
    ALICE_PIN,
    BOB,
    BOB_PHONE,
    DEFAULT,
    FIRST_FAILURE,
    GOODBYE,
    STRANGER,
    FakePorts,
    asked,
    at_method_menu,
    digits,
    new_call,
    speech,
    spoken,
    unmatched,
)

WELCOME = DEFAULT.steps["welcome"].say  # type: ignore[union-attr]


REPROMPT = DEFAULT.steps["identify"].reprompt  # type: ignore[union-attr]


class TestStart:
    def test_welcome_then_ask_for_the_account(self, engine: Engine) -> None:
        state = new_call()
        actions = engine.start(state)
        assert actions[0] == Say(WELCOME)
        assert len(actions) == 2
        ask = actions[1]
        assert isinstance(ask, Ask)
        assert (ask.step, ask.input, ask.finish_on_key, ask.speech) == (
            "identify",
            "dtmf",
            "#",
            False,
        )
        assert ask.prompt == DEFAULT.steps["identify"].prompt  # type: ignore[union-attr]
        assert (state.step, state.tries, state.failures, state.ended) == ("identify", 0, 0, False)
        assert state.account is None
        assert state.assurance is Assurance.none

    def test_start_asks_nothing_of_the_ports(self, engine: Engine, ports: FakePorts) -> None:
        engine.start(new_call())
        assert ports.verified == []
        assert ports.looked_up == []


class TestIdentify:
    def test_account_number_is_claimed(self, engine: Engine, ports: FakePorts) -> None:
        state = new_call()
        engine.start(state)
        actions = engine.answer(state, digits(ALICE))
        assert asked(actions) == "choose_method"
        assert state.account == ALICE
        assert state.assurance is Assurance.identified
        assert state.proofs == []
        assert ports.verified == []

    def test_star_claims_the_account_on_the_calling_number(
        self, engine: Engine, ports: FakePorts
    ) -> None:
        state = new_call(BOB_PHONE)
        engine.start(state)
        assert asked(engine.answer(state, digits("*"))) == "choose_method"
        assert state.account == BOB
        assert ports.looked_up == [BOB_PHONE]

    def test_known_and_unknown_caller_hear_the_same(self, engine: Engine) -> None:
        known, unknown = new_call(ALICE_PHONE), new_call(STRANGER)
        engine.start(known)
        engine.start(unknown)
        assert engine.answer(known, digits("*")) == engine.answer(unknown, digits("*"))
        assert unknown.step == known.step == "choose_method"

    def test_unknown_caller_then_fails_like_a_wrong_pin(self, engine: Engine) -> None:
        # Unknown number + right-looking PIN and known number + wrong PIN must sound alike.
        unknown = at_method_menu(engine, account="*", caller=STRANGER)
        known = at_method_menu(engine, account="*", caller=ALICE_PHONE)
        engine.answer(unknown, digits("1"))
        engine.answer(known, digits("1"))
        unknown_heard = engine.answer(unknown, digits(ALICE_PIN))
        known_heard = engine.answer(known, digits("000000"))
        assert unknown_heard == known_heard
        assert spoken(unknown_heard) == [FIRST_FAILURE]
        assert unknown.assurance is known.assurance is Assurance.identified

    def test_star_is_refused_where_caller_id_is_off(self, ports: FakePorts) -> None:
        identify = DEFAULT.steps["identify"]
        flow = DEFAULT.model_copy(
            update={
                "steps": {
                    **DEFAULT.steps,
                    "identify": identify.model_copy(update={"caller_id": False}),
                }
            }
        )
        engine = Engine(flow, ports)
        state = new_call()
        engine.start(state)
        actions = engine.answer(state, digits("*"))
        assert actions == [Say(REPROMPT), engine.start(new_call())[-1]]
        assert state.account is None
        assert ports.looked_up == []

    @pytest.mark.parametrize(
        "bad",
        [
            "12345",  # one short of min_digits
            "1234567890123",  # one over max_digits
            "12a456",
            "123 456",
            "123456#",
            "#",
            "**",
            "",
            "9" * 10_000,
            "١٢٣٤٥٦٧٨",  # Arabic-Indic digits: not keypad digits
            "²³⁴⁵⁶⁷",  # superscripts satisfy str.isdigit() but are no account number
        ],
        ids=[
            "short",
            "long",
            "letter",
            "space",
            "pound",
            "only-pound",
            "two-stars",
            "empty",
            "huge",
            "arabic-indic",
            "superscript",
        ],
    )
    def test_bad_account_input_re_prompts(self, engine: Engine, bad: str) -> None:
        state = new_call()
        first_ask = engine.start(state)[-1]
        actions = engine.answer(state, digits(bad))
        assert actions == [Say(REPROMPT), first_ask]
        assert (state.step, state.tries, state.account) == ("identify", 1, None)

    def test_boundary_lengths_are_accepted(self, engine: Engine) -> None:
        for claimed in ("123456", "123456789012"):
            state = new_call()
            engine.start(state)
            assert asked(engine.answer(state, digits(claimed))) == "choose_method"
            assert state.account == unmatched(claimed)  # no such account: never the digits

    def test_exhausted_tries_go_to_on_exhausted(self, engine: Engine) -> None:
        state = new_call()
        engine.start(state)
        assert asked(engine.answer(state, digits("1"))) == "identify"
        assert asked(engine.answer(state, CallerInput())) == "identify"
        actions = engine.answer(state, digits("x"))
        assert actions == [Say(GOODBYE), Hangup()]
        assert state.ended
        assert state.step == "goodbye"

    def test_a_good_answer_after_a_bad_one_resets_tries(self, engine: Engine) -> None:
        state = new_call()
        engine.start(state)
        engine.answer(state, digits("1"))
        engine.answer(state, digits(ALICE))
        assert (state.step, state.tries) == ("choose_method", 0)


class TestMenu:
    @pytest.mark.parametrize(("key", "step"), [("1", "pin"), ("2", "passcode")])
    def test_key_selects_a_choice(self, engine: Engine, key: str, step: str) -> None:
        state = at_method_menu(engine)
        assert asked(engine.answer(state, digits(key))) == step

    @pytest.mark.parametrize(
        ("said", "step"),
        [
            ("PIN", "pin"),
            ("pin.", "pin"),
            ("My PIN number, please!", "pin"),
            ("passcode", "passcode"),
            ("Pass code?", "passcode"),
            ("I'd like to use my PASSWORD.", "passcode"),
            ("  pass   phrase ", "passcode"),
        ],
    )
    def test_speech_selects_a_choice(self, engine: Engine, said: str, step: str) -> None:
        state = at_method_menu(engine)
        assert asked(engine.answer(state, speech(said))) == step

    @pytest.mark.parametrize("said", ["spinach", "pinnacle", "banana", "pass", ""])
    def test_partial_or_unknown_words_re_prompt(self, engine: Engine, said: str) -> None:
        state = at_method_menu(engine)
        actions = engine.answer(state, speech(said))
        assert asked(actions) == "choose_method"
        assert spoken(actions) == [DEFAULT.steps["choose_method"].reprompt]  # type: ignore[union-attr]
        assert state.tries == 1

    def test_unknown_key_re_prompts(self, engine: Engine) -> None:
        state = at_method_menu(engine)
        assert asked(engine.answer(state, digits("9"))) == "choose_method"
        assert state.tries == 1

    def test_menu_ask_takes_one_key_or_speech_with_hints(self, engine: Engine) -> None:
        state = new_call()
        engine.start(state)
        ask = engine.answer(state, digits(ALICE))[-1]
        assert isinstance(ask, Ask)
        assert (ask.input, ask.num_digits, ask.finish_on_key, ask.speech) == (
            "dtmf speech",
            1,
            None,
            True,
        )
        assert "passcode" in ask.hints
        assert "pin" in ask.hints

    def test_exhausted_menu_goes_to_on_exhausted(self, engine: Engine) -> None:
        state = at_method_menu(engine)
        for _ in range(2):
            engine.answer(state, digits("9"))
        actions = engine.answer(state, digits("9"))
        assert actions == [Say(GOODBYE), Hangup()]
        assert state.ended
