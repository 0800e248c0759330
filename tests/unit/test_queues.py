"""Queues declared once (issue 7, item 1): the declaration, the door it makes, and step-up.

A flow declares each queue under `queues:` with its requirement, the methods that count for it,
the roles that serve it and a stricter requirement for callers without caller ID attestation.
Enqueue steps only name a queue, so one queue cannot have two requirements. The checker proves
each path against the declaration; the engine decides by the same `Requirement`, and never asks
for a factor already proved in the call.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.assurance import Assurance, Requirement, attested, level_for
from ivr.errors import FlowDefinitionError, Problem
from ivr.flows.checks import check_flow, errors
from ivr.flows.engine import Action, CallerInput, CallState, Engine, Enqueue, Hangup, Say
from ivr.flows.loader import load_flow, parse_flow_with_marks
from tests.engine_fakes import asked
from tests.support import edit

REPO_ROOT = Path(__file__).resolve().parents[2]
FILE = "queues.yaml"
ACCOUNT, PIN, SMS, EMAIL = "12345678", "583920", "246810", "135790"

# PIN, then a menu: 1 balances; 2 card services, which the PIN alone does not open, through a
# card check offering a text or an email code.
FLOW = """\
name: queues
start: identify
authentication:
  max_failures: 2
  failure_route: refused
queues:
  balances:
    requires: one_factor
    roles: [agent]
  card-services:
    requires: two_factor
    methods: [pin, passcode, sms_otp, callback, service_code]
    roles: [specialist, supervisor]
steps:
  identify:
    kind: identify
    prompt: Enter your account number.
    next: pin
    on_exhausted: refused
  pin:
    kind: authenticate
    method: pin
    prompt: Enter your PIN.
    next: menu
    on_exhausted: refused
  menu:
    kind: menu
    prompt: 1 balance, 2 card.
    choices:
      - key: 1
        next: balance_queue
      - key: 2
        next: card_check
    on_exhausted: refused
  card_check:
    kind: menu
    prompt: 1 text, 2 email.
    choices:
      - key: 1
        next: sms
      - key: 2
        next: email
    on_exhausted: refused
  sms:
    kind: authenticate
    method: sms_otp
    prompt: Enter the text code.
    next: cards_queue
    on_unavailable: card_check
    on_exhausted: refused
  email:
    kind: authenticate
    method: email_otp
    prompt: Enter the email code.
    next: cards_queue
    on_unavailable: card_check
    on_exhausted: refused
  balance_queue:
    kind: enqueue
    queue: balances
  cards_queue:
    kind: enqueue
    queue: card-services
    say: Card services.
  refused:
    kind: hangup
    say: Please use another route.
"""


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def load_problems(text: str) -> list[Problem]:
    with pytest.raises(FlowDefinitionError) as caught:
        parse_flow_with_marks(text, FILE)
    return caught.value.problems


def check(text: str) -> list[Problem]:
    flow, marks = parse_flow_with_marks(text, FILE)
    return check_flow(flow, marks, FILE)


def drop_step(text: str, name: str) -> str:
    """Remove the step `name` (its block runs to the next step at the same indent)."""
    start = text.index(f"\n  {name}:\n") + 1
    end = text.find("\n  ", text.index("\n", start) + 1)
    while end != -1 and text[end + 3] == " ":
        end = text.find("\n  ", end + 1)
    return text[:start] + (text[end + 1 :] if end != -1 else "")


def no_email_card_check(text: str) -> str:
    """The card check offers only a text: what a NIST SP 800-63B rev 4 deployment writes."""
    return drop_step(edit(text, "      - key: 2\n        next: email\n", ""), "email")


def email_only_card_check(text: str) -> str:
    return drop_step(edit(text, "      - key: 1\n        next: sms\n", ""), "sms")


class TestDeclaration:
    def test_the_fixture_loads_and_says_what_each_queue_takes(self) -> None:
        flow, _ = parse_flow_with_marks(no_email_card_check(FLOW), FILE)
        cards = flow.queues["card-services"]
        assert cards.roles == ("specialist", "supervisor")
        assert cards.requirement == Requirement(
            Assurance.two_factor,
            frozenset({"pin", "passcode", "sms_otp", "callback", "service_code"}),
        )
        balances = flow.queues["balances"].requirement
        assert balances.level is Assurance.one_factor
        assert "email_otp" in balances.methods  # no `methods:`: every method counts

    def test_requires_on_an_enqueue_step_is_refused_with_the_way_to_declare_it(self) -> None:
        text = edit(
            FLOW, "    queue: balances\n", "    queue: balances\n    requires: one_factor\n"
        )
        (problem,) = load_problems(text)
        assert (problem.line, problem.column) == (line_of(text, "queue: balances") + 1, 5)
        assert problem.path == "steps.balance_queue.requires"
        assert problem.message == "`requires:` no longer goes on an enqueue step"
        assert "under `queues:`" in problem.hint
        assert "balances: {requires: one_factor" in problem.hint
        assert str(problem).startswith(f"{FILE}:{problem.line}:5: ")

    def test_one_queue_with_two_requirements_cannot_be_written(self) -> None:
        """The old bug: card services at two factors on one path and one factor on another.
        Written the old way, the flow no longer loads; each step's `requires:` is named."""
        text = edit(
            FLOW,
            "        next: balance_queue\n",
            "        next: lax_cards\n",
        )
        text += (
            "  lax_cards:\n    kind: enqueue\n    queue: card-services\n    requires: one_factor\n"
        )
        text = edit(text, "    queue: card-services\n    say:", "    queue: card-services\n"
                    "    requires: two_factor\n    say:")  # fmt: skip
        problems = load_problems(text)
        assert [p.path for p in problems] == [
            "steps.cards_queue.requires",
            "steps.lax_cards.requires",
        ]
        assert all("under `queues:`" in p.hint for p in problems)

    @pytest.mark.parametrize("key", ["requires", "unattested_requires"])
    @pytest.mark.parametrize("level", ["none", "identified"])
    def test_a_queue_always_demands_authentication(self, key: str, level: str) -> None:
        text = edit(FLOW, "    roles: [agent]\n", f"    roles: [agent]\n    {key}: {level}\n")
        if key == "requires":
            text = edit(
                text, "    requires: one_factor\n    roles: [agent]\n", "    roles: [agent]\n"
            )
        (problem,) = load_problems(text)
        assert problem.path == f"queues.balances.{key}"
        assert problem.line == line_of(text, f"{key}: {level}")
        assert "unauthenticated" in problem.message
        assert "one_factor" in problem.hint

    @pytest.mark.parametrize(
        ("methods", "missing"),
        [("[pin, passcode]", "possession"), ("[sms_otp, callback]", "knowledge")],
    )
    def test_a_two_factor_queue_no_method_list_could_open_is_refused(
        self, methods: str, missing: str
    ) -> None:
        text = edit(FLOW, "[pin, passcode, sms_otp, callback, service_code]", methods)
        (problem,) = load_problems(text)
        assert problem.path == "queues.card-services"
        assert f"needs a {missing} method" in problem.message

    @pytest.mark.parametrize(
        ("methods", "fragment"), [("[]", "is empty"), ("[pin, pin, sms_otp]", "twice")]
    )
    def test_bad_method_lists(self, methods: str, fragment: str) -> None:
        text = edit(FLOW, "[pin, passcode, sms_otp, callback, service_code]", methods)
        (problem,) = load_problems(text)
        assert fragment in problem.message

    def test_unattested_requirement_can_only_add(self) -> None:
        text = edit(
            FLOW,
            "    roles: [specialist, supervisor]\n",
            "    roles: [specialist, supervisor]\n    unattested_requires: one_factor\n",
        )
        (problem,) = load_problems(text)
        assert problem.path == "queues.card-services"
        assert "weaker than `requires`" in problem.message

    def test_a_queue_needs_roles(self) -> None:
        text = edit(FLOW, "    roles: [agent]\n", "")
        (problem,) = load_problems(text)
        assert problem.message == "missing required key `roles`"
        assert problem.line == line_of(text, "  balances:")

    def test_a_misspelt_queue_key_gets_a_suggestion(self) -> None:
        text = edit(FLOW, "    methods: [pin,", "    method: [pin,")
        (problem,) = load_problems(text)
        assert problem.message == "unknown key `method`"
        assert problem.hint == "did you mean `methods`?"
        assert problem.line == line_of(text, "    method: [pin,")

    def test_a_bad_queue_name(self) -> None:
        text = edit(FLOW, "  balances:\n", "  bal ances:\n")
        problem = load_problems(text)[0]
        assert problem.message == "`bal ances` is not a valid queue name"
        assert problem.line == line_of(text, "  bal ances:")


class TestChecker:
    def test_undeclared_queue_with_a_suggestion(self) -> None:
        text = edit(FLOW, "    queue: balances\n", "    queue: balance\n")
        (problem,) = errors(check(text))
        assert problem.path == "steps.balance_queue.queue"
        assert (problem.line, problem.column) == (line_of(text, "queue: balance"), 5)
        assert problem.message == "no queue `balance` under `queues:`"
        assert problem.hint == "did you mean `balances`?"

    def test_undeclared_queue_with_nothing_close(self) -> None:
        text = edit(FLOW, "    queue: balances\n", "    queue: zzz\n")
        (problem,) = errors(check(text))
        assert "declare it under `queues:`" in problem.hint

    def test_email_code_does_not_count_where_methods_leave_it_out(self) -> None:
        (problem,) = errors(check(FLOW))
        assert problem.path == "steps.cards_queue.queue"
        assert problem.line == line_of(FLOW, "queue: card-services")
        assert "with assurance `one_factor` (needs `two_factor`;" in problem.message
        assert "email_otp does not count for it" in problem.message
        assert "card_check -(choices[1].next)-> email -> cards_queue" in problem.message
        assert "by one of pin, passcode, sms_otp, callback, service_code" in problem.hint

    def test_without_the_email_route_the_flow_is_sound(self) -> None:
        assert check(no_email_card_check(FLOW)) == []

    def test_where_every_method_counts_email_only_is_a_warning(self) -> None:
        text = edit(FLOW, "    methods: [pin, passcode, sms_otp, callback, service_code]\n", "")
        text = email_only_card_check(text)
        problems = check(text)
        assert errors(problems) == []
        (warning,) = problems
        assert warning.severity == "warning"
        assert warning.path == "queues.card-services.requires"
        assert "email is the only possession factor" in warning.message

    def test_a_method_list_whose_only_possession_is_email_is_warned(self) -> None:
        text = edit(
            FLOW, "[pin, passcode, sms_otp, callback, service_code]", "[pin, passcode, email_otp]"
        )
        text = email_only_card_check(text)
        problems = check(text)
        assert errors(problems) == []
        assert [(p.severity, p.path) for p in problems] == [
            ("warning", "queues.card-services.methods")
        ]
        assert problems[0].line == line_of(text, "methods: [pin, passcode, email_otp]")

    def test_unattested_callers_are_proved_against_the_stricter_requirement(self) -> None:
        """Any caller may come without attestation, so the PIN-only path to balances is
        refused when unattested callers need two factors there."""
        text = edit(
            FLOW,
            "    roles: [agent]\n",
            "    roles: [agent]\n    unattested_requires: two_factor\n",
        )
        text = no_email_card_check(text)
        (problem,) = errors(check(text))
        assert problem.path == "steps.balance_queue.queue"
        assert "(needs `two_factor` when caller ID is not attested)" in problem.message
        assert "pin -> menu -(choices[0].next)-> balance_queue" in problem.message

    def test_a_declared_queue_nobody_is_sent_to_is_a_warning(self) -> None:
        text = edit(
            no_email_card_check(FLOW),
            "queues:\n",
            "queues:\n  spare:\n    requires: one_factor\n    roles: [agent]\n",
        )
        problems = check(text)
        assert [(p.severity, p.path) for p in problems] == [("warning", "queues.spare")]

    def test_a_loop_through_an_authenticate_step_would_never_wait_once_proved(self) -> None:
        text = edit(no_email_card_check(FLOW), "    next: menu\n", "    next: again\n")
        text += "  again:\n    kind: say\n    say: Once more.\n    next: pin\n"
        (problem,) = errors(check(text))
        assert "loops forever without input" in problem.message

    def test_the_shipped_flow_keeps_email_away_from_card_services(self) -> None:
        flow = load_flow(REPO_ROOT / "flows" / "default.yaml")
        cards = flow.queues["card-services"].requirement
        assert cards.level is Assurance.two_factor
        assert "email_otp" not in cards.methods
        assert flow.queues["card-services"].roles == ("specialist", "supervisor")
        assert set(flow.queues) == {"balances", "card-services", "general"}


class TestAssurance:
    def test_only_allowed_methods_count(self) -> None:
        assert level_for(True, ["pin", "email_otp"]) is Assurance.two_factor
        assert level_for(True, ["pin", "email_otp"], ["pin", "sms_otp"]) is Assurance.one_factor
        assert level_for(True, ["email_otp"], ["pin"]) is Assurance.identified
        assert level_for(False, ["pin", "sms_otp"], ["pin", "sms_otp"]) is Assurance.none

    @pytest.mark.parametrize(
        ("attestation", "expected"),
        [("A", True), ("B", True), ("C", True), ("failed", False), ("absent", False),
         ("X", False), (None, False)],
    )  # fmt: skip
    def test_attested(self, attestation: str | None, expected: bool) -> None:
        signals = {} if attestation is None else {"attestation": attestation}
        assert attested(signals) is expected

    def test_unattested_needs_the_stricter_level(self) -> None:
        req = Requirement(Assurance.one_factor, unattested=Assurance.two_factor)
        assert req.met(True, ["pin"], is_attested=True)
        assert not req.met(True, ["pin"], is_attested=False)
        assert req.met(True, ["pin", "sms_otp"], is_attested=False)
        assert req.strictest is Assurance.two_factor


# -- the engine ------------------------------------------------------------------------------


class Ports:
    """One account whose PIN and codes are known; every verify and send is recorded."""

    def __init__(self) -> None:
        self.verified: list[str] = []
        self.requested: list[str] = []

    def account_for_caller(self, caller: str) -> str | None:
        return None

    def claim(self, digits: str) -> str:
        return digits if digits == ACCOUNT else "unmatched"

    def drop_claim(self, state: CallState) -> None:
        pass

    def verify(self, state: CallState, method: str, answer: str | None) -> bool:
        self.verified.append(method)
        right = {"pin": PIN, "sms_otp": SMS, "email_otp": EMAIL}.get(method)
        return state.account == ACCOUNT and answer == right

    def request_code(self, state: CallState, method: str, max_wait: int) -> str:
        self.requested.append(method)
        return "queued"

    def delivery_status(self, state: CallState, method: str) -> str:
        return "sent"

    def abandon_delivery(self, state: CallState, method: str) -> None:
        pass

    def note(self, state: CallState, event: str, **fields: str) -> None:
        pass

    def request_callback(self, state: CallState, step: str) -> str:
        return "queued"


def play(engine: Engine, state: CallState, *keys: str) -> list[Action]:
    """Answer each question in turn; a hold is polled until the code is asked for."""
    actions = engine.start(state)
    for key in keys:
        actions = engine.answer(state, CallerInput(digits=key))
        while state.holding:
            actions = engine.poll(state)
    return actions


def engine_for(text: str) -> tuple[Engine, Ports, CallState]:
    flow, _ = parse_flow_with_marks(text, FILE)
    ports = Ports()
    return Engine(flow, ports), ports, CallState("CA1", "+14155550123", flow.start)


# The card path lists every factor card services needs, the PIN included.
RECIPE = edit(
    no_email_card_check(FLOW),
    "        next: card_check\n    on_exhausted: refused\n",
    "        next: card_pin\n    on_exhausted: refused\n"
    "  card_pin:\n    kind: authenticate\n    method: pin\n    prompt: Enter your card PIN.\n"
    "    next: card_check\n    on_exhausted: refused\n",
)


class TestStepUp:
    def test_the_recipe_flow_passes_the_checks(self) -> None:
        assert check(RECIPE) == []

    def test_a_proved_pin_is_not_asked_again(self) -> None:
        engine, ports, state = engine_for(RECIPE)
        actions = play(engine, state, ACCOUNT, PIN, "2")
        assert asked(actions) == "card_check"  # card_pin was skipped
        assert ports.verified == ["pin"]
        assert state.failures == 0
        actions = play_on(engine, state, "1", SMS)
        assert actions == [Say("Card services."), Enqueue("cards_queue", "card-services")]
        assert ports.verified == ["pin", "sms_otp"]
        assert state.assurance is Assurance.two_factor

    def test_a_new_claim_is_asked_for_its_own_pin(self) -> None:
        text = edit(
            RECIPE,
            "      - key: 2\n        next: card_pin\n",
            "      - key: 2\n        next: card_pin\n      - key: 9\n        next: identify\n",
        )
        assert errors(check(text)) == []
        engine, ports, state = engine_for(text)
        # the PIN proved for the first claim proves nothing for the second: asked again
        assert asked(play(engine, state, ACCOUNT, PIN, "9", "87654321")) == "pin"
        assert state.proofs == []
        assert ports.verified == ["pin"]

    def test_a_step_up_menu_is_skipped_for_a_caller_who_qualifies(self) -> None:
        """Balances need a second factor from an unattested caller: an attested PIN caller
        goes straight to the queue; an unattested one hears the step-up menu."""
        text = edit(
            FLOW,
            "    roles: [agent]\n",
            "    roles: [agent]\n    unattested_requires: two_factor\n",
        )
        text = edit(text, "        next: balance_queue\n", "        next: balance_check\n")
        text += (
            "  balance_check:\n    kind: menu\n    prompt: One more check. 1 text.\n"
            "    choices:\n      - key: 1\n        next: balance_sms\n    on_exhausted: refused\n"
            "  balance_sms:\n    kind: authenticate\n    method: sms_otp\n    prompt: Enter it.\n"
            "    next: balance_queue\n    on_unavailable: refused\n    on_exhausted: refused\n"
        )
        text = no_email_card_check(text)
        assert errors(check(text)) == []

        engine, _, state = engine_for(text)
        state.signals["attestation"] = "A"
        assert play(engine, state, ACCOUNT, PIN, "1") == [Enqueue("balance_queue", "balances")]

        for attestation in ("failed", "absent", None):
            engine, _, state = engine_for(text)
            if attestation:
                state.signals["attestation"] = attestation
            assert asked(play(engine, state, ACCOUNT, PIN, "1")) == "balance_check"
            assert play_on(engine, state, "1", SMS) == [Enqueue("balance_queue", "balances")]


def play_on(engine: Engine, state: CallState, *keys: str) -> list[Action]:
    actions: list[Action] = []
    for key in keys:
        actions = engine.answer(state, CallerInput(digits=key))
        while state.holding:
            actions = engine.poll(state)
    return actions


class TestDoorAtRunTime:
    """The engine decides by the queue's declaration even for a flow the checker refused."""

    def test_an_email_code_does_not_open_card_services(self) -> None:
        engine, ports, state = engine_for(FLOW)
        actions = play(engine, state, ACCOUNT, PIN, "2", "2", EMAIL)
        assert ports.verified == ["pin", "email_otp"]
        assert state.proofs == ["pin", "email_otp"]
        assert not any(isinstance(a, Enqueue) for a in actions)
        assert actions == [Say("Please use another route."), Hangup()]

    def test_a_text_does(self) -> None:
        engine, _, state = engine_for(FLOW)
        actions = play(engine, state, ACCOUNT, PIN, "2", "1", SMS)
        assert actions[-1] == Enqueue("cards_queue", "card-services")

    def test_an_email_code_still_counts_where_every_method_does(self) -> None:
        text = edit(FLOW, "    methods: [pin, passcode, sms_otp, callback, service_code]\n", "")
        engine, _, state = engine_for(text)
        actions = play(engine, state, ACCOUNT, PIN, "2", "2", EMAIL)
        assert actions[-1] == Enqueue("cards_queue", "card-services")
