"""The engine's authentication steps: a secret proven, and failures counted."""

from __future__ import annotations

import pytest

from ivr.assurance import Assurance
from ivr.flows.engine import (
    Ask,
    CallerInput,
    Engine,
    Enqueue,
    Hangup,
    Say,
)
from tests.engine_fakes import (
    ALICE,
    ALICE_PASSCODE,
    ALICE_PIN,
    DEFAULT,
    FIRST_FAILURE,
    GOODBYE,
    OTHER_ROUTE,
    FakePorts,
    asked,
    at_main_menu,
    at_method_menu,
    digits,
    no_agent,
    speech,
    spoken,
)


class TestAuthenticationSuccess:
    def test_pin_reaches_the_menu_and_then_the_queue(
        self, engine: Engine, ports: FakePorts
    ) -> None:
        state = at_method_menu(engine)
        ask = engine.answer(state, digits("1"))[-1]
        assert isinstance(ask, Ask)
        assert (ask.step, ask.input, ask.finish_on_key) == ("pin", "dtmf", "#")
        assert asked(engine.answer(state, digits(ALICE_PIN))) == "main_menu"
        assert state.proofs == ["pin"]
        assert state.assurance is Assurance.one_factor
        assert ports.verified == [(ALICE, "pin", ALICE_PIN)]
        actions = engine.answer(state, digits("1"))
        assert actions == [
            Say("Connecting you to an agent who can help with your balance."),
            Enqueue("balance_queue", "balances"),
        ]
        assert state.ended

    def test_spoken_passcode_is_normalised_before_verify(
        self, engine: Engine, ports: FakePorts
    ) -> None:
        state = at_method_menu(engine)
        ask = engine.answer(state, digits("2"))[-1]
        assert isinstance(ask, Ask)
        assert (ask.step, ask.input, ask.speech) == ("passcode", "speech", True)
        actions = engine.answer(state, speech(ALICE_PASSCODE, confidence=0.93))
        assert asked(actions) == "main_menu"
        assert ports.verified == [(ALICE, "passcode", "purpleelephant42")]
        assert state.proofs == ["passcode"]

    @pytest.mark.parametrize(
        ("said", "queue"),
        [("balance", "balances"), ("Agent, please.", "general"), ("0", "general")],
    )
    def test_main_menu_reaches_each_queue(self, engine: Engine, said: str, queue: str) -> None:
        state = at_main_menu(engine)
        given = digits(said) if said.isdigit() else speech(said)
        actions = engine.answer(state, given)
        assert isinstance(actions[-1], Enqueue)
        assert actions[-1].queue == queue

    def test_a_card_change_asks_for_a_second_factor(self, engine: Engine) -> None:
        state = at_main_menu(engine)
        actions = engine.answer(state, speech("lost card"))
        assert not any(isinstance(a, Enqueue) for a in actions)
        assert asked(actions) == "card_check"


class TestAuthenticationFailure:
    def test_first_failure_says_attempts_left_and_goes_to_on_failure(self, engine: Engine) -> None:
        state = at_method_menu(engine)
        engine.answer(state, digits("1"))
        actions = engine.answer(state, digits("000000"))
        assert spoken(actions) == [FIRST_FAILURE]
        assert asked(actions) == "choose_method"
        assert state.failures == 1
        assert state.proofs == []
        assert not state.ended

    def test_second_failure_ends_on_the_failure_route(self, engine: Engine) -> None:
        state = at_method_menu(engine)
        engine.answer(state, digits("1"))
        engine.answer(state, digits("000000"))
        engine.answer(state, digits("1"))
        actions = engine.answer(state, digits("111111"))
        assert actions == [Say(OTHER_ROUTE), Hangup()]
        assert no_agent(actions)
        assert state.ended
        assert state.step == "other_route"
        assert state.failures == 2

    def test_the_right_pin_after_the_budget_is_spent_opens_nothing(
        self, engine: Engine, ports: FakePorts
    ) -> None:
        state = at_method_menu(engine)
        for wrong in ("000000", "111111"):
            engine.answer(state, digits("1"))
            engine.answer(state, digits(wrong))
        assert engine.answer(state, digits(ALICE_PIN)) == [Hangup()]
        assert engine.answer(state, digits("1")) == [Hangup()]
        assert len(ports.verified) == 2

    def test_failures_count_across_methods(self, engine: Engine) -> None:
        state = at_method_menu(engine)
        engine.answer(state, digits("1"))
        assert asked(engine.answer(state, digits("000000"))) == "choose_method"
        engine.answer(state, digits("2"))
        actions = engine.answer(state, speech("green giraffe", confidence=0.95))
        assert actions == [Say(OTHER_ROUTE), Hangup()]
        assert state.failures == 2

    def test_low_confidence_is_a_failure_and_no_transcript_reaches_verify(
        self, engine: Engine, ports: FakePorts
    ) -> None:
        state = at_method_menu(engine)
        engine.answer(state, digits("2"))
        # The right passcode, heard with too little confidence: not compared, not passed on.
        actions = engine.answer(state, speech(ALICE_PASSCODE, confidence=0.2))
        assert spoken(actions) == [FIRST_FAILURE]
        assert state.failures == 1
        assert state.proofs == []
        assert ports.verified == [(ALICE, "passcode", None)]

    def test_missing_confidence_is_a_failure(self, engine: Engine, ports: FakePorts) -> None:
        state = at_method_menu(engine)
        engine.answer(state, digits("2"))
        engine.answer(state, speech(ALICE_PASSCODE, confidence=None))
        assert state.failures == 1
        assert ports.verified == [(ALICE, "passcode", None)]

    def test_confidence_at_the_threshold_is_accepted(self, engine: Engine) -> None:
        state = at_method_menu(engine)
        engine.answer(state, digits("2"))
        assert asked(engine.answer(state, speech(ALICE_PASSCODE, confidence=0.5))) == "main_menu"

    def test_non_digit_pin_is_an_unusable_attempt(self, engine: Engine, ports: FakePorts) -> None:
        state = at_method_menu(engine)
        engine.answer(state, digits("1"))
        engine.answer(state, CallerInput(digits="58392a"))
        engine.answer(state, digits("1"))
        engine.answer(state, CallerInput(speech="five eight three nine two zero", confidence=1.0))
        assert ports.verified == [(ALICE, "pin", None), (ALICE, "pin", None)]
        assert state.ended

    @pytest.mark.parametrize(
        "empty",
        [CallerInput(), CallerInput(digits=""), CallerInput(speech="   ", confidence=0.9)],
        ids=["nothing", "empty-digits", "blank-speech"],
    )
    def test_empty_input_is_a_retry_not_a_failure(
        self, engine: Engine, ports: FakePorts, empty: CallerInput
    ) -> None:
        state = at_method_menu(engine)
        engine.answer(state, digits("1"))
        actions = engine.answer(state, empty)
        assert asked(actions) == "pin"
        assert spoken(actions) == [DEFAULT.steps["pin"].reprompt]  # type: ignore[union-attr]
        assert (state.tries, state.failures) == (1, 0)
        assert ports.verified == []

    def test_silence_until_exhausted_is_goodbye_not_the_failure_route(self, engine: Engine) -> None:
        state = at_method_menu(engine)
        engine.answer(state, digits("1"))
        engine.answer(state, CallerInput())
        engine.answer(state, CallerInput())
        actions = engine.answer(state, CallerInput())
        assert actions == [Say(GOODBYE), Hangup()]
        assert state.failures == 0
