"""The engine's call state: its JSON round trip, repeats, and a call that has ended."""

from __future__ import annotations

import dataclasses
import json

from ivr.assurance import Assurance
from ivr.flows.engine import (
    CallerInput,
    CallState,
    Engine,
    Hangup,
    Say,
)
from tests.engine_fakes import (
    ALICE,
    ALICE_PHONE,
    DEFAULT,
    OTHER_ROUTE,
    FakePorts,
    asked,
    at_main_menu,
    at_method_menu,
    bank_ports,
    digits,
    new_call,
)


class TestCallState:
    def test_json_round_trip(self) -> None:
        state = CallState(
            call_sid="CA1",
            caller=ALICE_PHONE,
            step="main_menu",
            seq=7,
            tries=1,
            account=ALICE,
            proofs=["pin", "service_code"],
            failures=1,
            ended=False,
        )
        text = state.to_json()
        assert CallState.from_json(text) == state
        assert CallState.from_json(text.encode()) == state

    def test_a_call_continues_from_its_stored_state(self, engine: Engine) -> None:
        state = at_method_menu(engine)
        engine.answer(state, digits("1"))
        engine.answer(state, digits("000000"))
        stored = CallState.from_json(state.to_json())
        fresh = Engine(DEFAULT, bank_ports())
        assert fresh.answer(stored, digits("1")) == engine.answer(state, digits("1"))
        assert fresh.answer(stored, digits("111111")) == [Say(OTHER_ROUTE), Hangup()]

    def test_assurance_is_derived_not_stored(self) -> None:
        state = CallState(call_sid="CA1", caller=ALICE_PHONE, step="x", proofs=["pin"])
        assert state.assurance is Assurance.none  # a proof without a claimed account is nothing
        assert "assurance" not in state.to_json()


class TestRepeat:
    def test_repeat_re_asks_without_counting(self, engine: Engine) -> None:
        state = new_call()
        first_ask = engine.start(state)[-1]
        engine.answer(state, digits("1"))
        assert engine.repeat(state) == [first_ask]
        assert (state.step, state.tries, state.failures) == ("identify", 1, 0)

    def test_repeat_keeps_failures(self, engine: Engine) -> None:
        state = at_method_menu(engine)
        engine.answer(state, digits("1"))
        engine.answer(state, digits("000000"))
        before = (state.step, state.tries, state.failures, list(state.proofs))
        actions = engine.repeat(state)
        assert asked(actions) == "choose_method"
        assert len(actions) == 1
        assert (state.step, state.tries, state.failures, state.proofs) == before

    def test_repeat_twice_is_the_same(self, engine: Engine) -> None:
        state = at_method_menu(engine)
        assert engine.repeat(state) == engine.repeat(state)


class TestEndedCall:
    def test_answer_after_enqueue_is_hangup(self, engine: Engine, ports: FakePorts) -> None:
        state = at_main_menu(engine)
        engine.answer(state, digits("0"))
        verified = list(ports.verified)
        assert engine.answer(state, digits("1")) == [Hangup()]
        assert engine.repeat(state) == [Hangup()]
        assert ports.verified == verified

    def test_answer_after_hangup_is_hangup(self, engine: Engine) -> None:
        state = new_call()
        engine.start(state)
        for _ in range(3):
            engine.answer(state, CallerInput())
        assert state.ended
        assert engine.answer(state, digits(ALICE)) == [Hangup()]
        assert state.account is None


def test_the_stored_form_is_every_field_as_plain_json() -> None:
    """`to_json` dumps the fields as they are: a field that is not plain JSON (a nested
    dataclass, a tuple) would be stored differently from what `asdict` makes, and fails here."""
    state = CallState("CA" + "1" * 32, "+14155550100", "pin", seq=3, account="12345678")
    state.proofs.append("pin")
    state.proven_at["pin"] = 1.5
    state.signals["stir"] = "A"
    assert json.loads(state.to_json()) == dataclasses.asdict(state)
    assert CallState.from_json(state.to_json()) == state
