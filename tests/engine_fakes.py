"""The pure engine's world for its unit tests: a fake `Ports`, the default flow, and call helpers.

Kept apart from `tests.support` (whose `ALICE` is a customer record, not an account number):
the engine is tested without Flask or Redis, through its `Ports` protocol only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ivr.auth.speech import normalise_passcode
from ivr.flows.engine import Action, Ask, CallerInput, CallState, Engine, Enqueue, Say
from ivr.flows.loader import load_flow

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT = load_flow(REPO_ROOT / "flows" / "default.yaml")
ALICE, BOB = "12345678", "87654321"
ALICE_PHONE, BOB_PHONE, STRANGER = "+14155550100", "+14155550199", "+14155550777"
ALICE_PIN, BOB_PIN = "583920", "902714"
ALICE_PASSCODE = "Purple elephant, forty-two."
OTHER_ROUTE = DEFAULT.steps["other_route"].say  # type: ignore[union-attr]
GOODBYE = DEFAULT.steps["goodbye"].say  # type: ignore[union-attr]
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
