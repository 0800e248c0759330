"""The pure call engine: (flow, call state, caller input) -> what the caller hears next.

The world arrives through a fake `Ports`: a dict of account secrets, a dict of caller numbers,
and a record of every verify call, so each test can also assert what the engine *asked*.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ivr.assurance import Assurance
from ivr.auth.speech import normalise_passcode
from ivr.flows.engine import (
    Action,
    Ask,
    CallerInput,
    CallState,
    Engine,
    Enqueue,
    Hangup,
    Say,
)
from ivr.flows.loader import load_flow
from ivr.flows.schema import (
    AuthenticateStep,
    AuthenticationPolicy,
    Choice,
    EnqueueStep,
    Flow,
    GotoStep,
    HangupStep,
    IdentifyStep,
    MenuStep,
    Queue,
    SayStep,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT = load_flow(REPO_ROOT / "flows" / "default.yaml")

ALICE, BOB = "12345678", "87654321"
ALICE_PHONE, BOB_PHONE, STRANGER = "+14155550100", "+14155550199", "+14155550777"
ALICE_PIN, BOB_PIN = "583920", "902714"
ALICE_PASSCODE = "Purple elephant, forty-two."

WELCOME = DEFAULT.steps["welcome"].say  # type: ignore[union-attr]
OTHER_ROUTE = DEFAULT.steps["other_route"].say  # type: ignore[union-attr]
GOODBYE = DEFAULT.steps["goodbye"].say  # type: ignore[union-attr]
REPROMPT = DEFAULT.steps["identify"].reprompt  # type: ignore[union-attr]
FIRST_FAILURE = "That did not match our records. You have 1 attempt left."


class FakePorts:
    """Accounts -> {method: secret}, callers -> account; every verify call is recorded."""

    def __init__(
        self,
        secrets: dict[str, dict[str, str]] | None = None,
        callers: dict[str, str] | None = None,
    ) -> None:
        self.secrets = secrets if secrets is not None else {}
        self.callers = callers if callers is not None else {}
        self.verified: list[tuple[str | None, str, str | None]] = []
        self.looked_up: list[str] = []
        self.dropped: list[str | None] = []
        self.notes: list[tuple[str, dict[str, str]]] = []

    def account_for_caller(self, caller: str) -> str | None:
        self.looked_up.append(caller)
        return self.callers.get(caller)

    def claim(self, digits: str) -> str:
        """Known accounts by number; other digits by an opaque id, as the Verifier does."""
        return digits if digits in self.secrets else unmatched(digits)

    def drop_claim(self, state: CallState) -> None:
        self.dropped.append(state.account)

    def verify(self, state: CallState, method: str, answer: str | None) -> bool:
        self.verified.append((state.account, method, answer))
        if answer is None or state.account is None:
            return False
        return self.secrets.get(state.account, {}).get(method) == answer

    def note(self, state: CallState, event: str, **fields: str) -> None:
        self.notes.append((event, fields))


def unmatched(digits: str) -> str:
    return "unmatched-" + hashlib.sha256(digits.encode()).hexdigest()[:12]


def bank_ports() -> FakePorts:
    return FakePorts(
        secrets={
            ALICE: {"pin": ALICE_PIN, "passcode": normalise_passcode(ALICE_PASSCODE)},
            BOB: {"pin": BOB_PIN, "service_code": "246810"},
        },
        callers={ALICE_PHONE: ALICE, BOB_PHONE: BOB},
    )


@pytest.fixture
def ports() -> FakePorts:
    return bank_ports()


@pytest.fixture
def engine(ports: FakePorts) -> Engine:
    return Engine(DEFAULT, ports)


def new_call(caller: str = ALICE_PHONE) -> CallState:
    return CallState(call_sid="CA0123456789abcdef", caller=caller, step=DEFAULT.start)


def digits(value: str) -> CallerInput:
    return CallerInput(digits=value)


def speech(text: str, confidence: float | None = 0.9) -> CallerInput:
    return CallerInput(speech=text, confidence=confidence)


def asked(actions: list[Action]) -> str:
    """The step the caller is now being asked for; fails if the call is not waiting for input."""
    assert isinstance(actions[-1], Ask), actions
    return actions[-1].step


def spoken(actions: list[Action]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Say)]


def no_agent(actions: list[Action]) -> bool:
    return not any(isinstance(a, Enqueue) for a in actions)


def at_method_menu(engine: Engine, account: str = ALICE, caller: str = ALICE_PHONE) -> CallState:
    state = new_call(caller)
    engine.start(state)
    assert asked(engine.answer(state, digits(account))) == "choose_method"
    return state


def at_main_menu(engine: Engine) -> CallState:
    state = at_method_menu(engine)
    engine.answer(state, digits("1"))
    assert asked(engine.answer(state, digits(ALICE_PIN))) == "main_menu"
    return state


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


def policy_flow(**steps: object) -> Flow:
    """A flow built straight from the models: no loader, no checker in the way."""
    base: dict[str, object] = {
        "identify": IdentifyStep(
            kind="identify", prompt="Account?", next="menu", on_exhausted="refused"
        ),
        "menu": MenuStep(
            kind="menu",
            prompt="1 agent, 2 PIN, 3 vip, 9 identify again.",
            choices=[
                Choice(key="1", next="agent"),
                Choice(key="2", next="pin"),
                Choice(key="3", next="vip"),
                Choice(key="9", next="identify"),
            ],
            on_exhausted="refused",
        ),
        "pin": AuthenticateStep(
            kind="authenticate",
            method="pin",
            prompt="PIN?",
            failure_prompt="No. {attempts_left} left.",
            next="menu",
            on_exhausted="refused",
        ),
        "sms": AuthenticateStep(
            kind="authenticate",
            method="service_code",
            prompt="Code?",
            next="menu",
            on_exhausted="refused",
        ),
        "agent": EnqueueStep(kind="enqueue", queue="general"),
        "vip": EnqueueStep(kind="enqueue", queue="vip", say="VIP."),
        "refused": HangupStep(kind="hangup", say="Please use another route."),
    }
    base.update(steps)
    failure_route = str(base.pop("_failure_route", "refused"))
    return Flow(
        name="direct",
        start="identify",
        authentication=AuthenticationPolicy(max_failures=2, failure_route=failure_route),
        queues={
            "general": Queue(requires="one_factor", roles=("agent",)),
            "vip": Queue(requires="two_factor", roles=("specialist",)),
        },
        steps=base,  # type: ignore[arg-type]
    )


def call_on(flow: Flow, ports: FakePorts, account: str = ALICE) -> tuple[Engine, CallState]:
    engine = Engine(flow, ports)
    state = CallState(call_sid="CA1", caller=ALICE_PHONE, step=flow.start)
    assert asked(engine.start(state)) == "identify"
    assert asked(engine.answer(state, digits(account))) == "menu"
    return engine, state


class TestDoorAtRunTime:
    """Even a flow the checker never saw cannot put an unproven caller through to an agent."""

    def test_queue_without_authentication_goes_to_the_failure_route(self, ports: FakePorts) -> None:
        engine, state = call_on(policy_flow(), ports)
        actions = engine.answer(state, digits("1"))
        assert actions == [Say("Please use another route."), Hangup()]
        assert state.ended
        assert state.step == "refused"

    def test_one_factor_queue_opens_after_a_pin(self, ports: FakePorts) -> None:
        engine, state = call_on(policy_flow(), ports)
        engine.answer(state, digits("2"))
        engine.answer(state, digits(ALICE_PIN))
        assert engine.answer(state, digits("1")) == [Enqueue("agent", "general")]

    def test_two_factor_queue_refuses_a_pin_alone(self, ports: FakePorts) -> None:
        engine, state = call_on(policy_flow(), ports)
        engine.answer(state, digits("2"))
        engine.answer(state, digits(ALICE_PIN))
        actions = engine.answer(state, digits("3"))
        assert no_agent(actions)
        assert actions[-1] == Hangup()
        assert spoken(actions) == ["Please use another route."]

    def test_two_factor_queue_opens_with_pin_and_sms(self, ports: FakePorts) -> None:
        flow = policy_flow(
            pin=AuthenticateStep(
                kind="authenticate", method="pin", prompt="PIN?", next="sms", on_exhausted="refused"
            )
        )
        engine, state = call_on(flow, ports, account=BOB)
        engine.answer(state, digits("2"))
        assert asked(engine.answer(state, digits(BOB_PIN))) == "sms"
        assert asked(engine.answer(state, digits("246810"))) == "menu"
        assert state.assurance is Assurance.two_factor
        assert engine.answer(state, digits("3")) == [Say("VIP."), Enqueue("vip", "vip")]

    def test_failure_route_that_is_a_queue_hangs_up(self, ports: FakePorts) -> None:
        engine, state = call_on(policy_flow(_failure_route="agent"), ports)
        engine.answer(state, digits("2"))
        engine.answer(state, digits("000000"))
        actions = engine.answer(state, digits("000001"))
        assert actions[-1] == Hangup()
        assert no_agent(actions)
        assert state.ended

    def test_spent_budget_never_reaches_a_queue_whatever_was_proved(self, ports: FakePorts) -> None:
        # PIN proved, then two failed SMS codes; the failure route leads (wrongly) to a queue
        # the caller's one factor would otherwise open.
        flow = policy_flow(
            pin=AuthenticateStep(
                kind="authenticate", method="pin", prompt="PIN?", next="sms", on_exhausted="refused"
            ),
            sms=AuthenticateStep(
                kind="authenticate",
                method="service_code",
                prompt="Code?",
                next="menu",
                on_exhausted="refused",
            ),
            sorry=GotoStep(kind="goto", next="agent"),
            _failure_route="sorry",
        )
        engine, state = call_on(flow, ports, account=BOB)
        engine.answer(state, digits("2"))
        engine.answer(state, digits(BOB_PIN))
        assert state.assurance is Assurance.one_factor
        engine.answer(state, digits("000000"))
        actions = engine.answer(state, digits("000001"))
        assert no_agent(actions)
        assert actions[-1] == Hangup()
        assert state.ended

    def test_re_identifying_as_another_account_drops_proofs(self, ports: FakePorts) -> None:
        engine, state = call_on(policy_flow(), ports)
        engine.answer(state, digits("2"))
        engine.answer(state, digits(ALICE_PIN))
        assert state.assurance is Assurance.one_factor
        assert asked(engine.answer(state, digits("9"))) == "identify"
        assert asked(engine.answer(state, digits(BOB))) == "menu"
        assert state.account == BOB
        assert state.proofs == []
        assert state.assurance is Assurance.identified
        actions = engine.answer(state, digits("1"))
        assert no_agent(actions)

    def test_say_steps_on_the_way_are_spoken(self, ports: FakePorts) -> None:
        flow = policy_flow(
            menu=MenuStep(
                kind="menu",
                prompt="1 for news.",
                choices=[Choice(key="1", next="news")],
                on_exhausted="refused",
            ),
            news=SayStep(kind="say", say="Branches close at five.", next="bye"),
            bye=GotoStep(kind="goto", next="refused"),
        )
        engine, state = call_on(flow, ports)
        actions = engine.answer(state, digits("1"))
        assert actions == [
            Say("Branches close at five."),
            Say("Please use another route."),
            Hangup(),
        ]


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
