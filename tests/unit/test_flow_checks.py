"""The static checks `ivr flows check` runs before any flow is served.

Each test writes a small flow as YAML, loads it the way a flow file is loaded (so problems carry
real line numbers) and asserts what an admin would read: which line is wrong, why, and by which
path a caller could get there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.errors import FlowDefinitionError, Problem
from ivr.flows.checks import check_flow, errors
from ivr.flows.engine import CallState, Engine, Say
from ivr.flows.loader import load_flow_with_marks, parse_flow_with_marks
from ivr.flows.prompts import ALLOWED_FIELDS
from tests.support import edit, line_of

REPO_ROOT = Path(__file__).resolve().parents[2]
FILE = "test.yaml"

# A sound flow: identify, choose a method, authenticate, then a menu of queues.
GOOD = """\
name: small
start: welcome
authentication:
  max_failures: 2
  failure_route: other_route
queues:
  general:
    requires: one_factor
    roles: [agent]
steps:
  welcome:
    kind: say
    say: Welcome.
    next: identify
  identify:
    kind: identify
    prompt: Enter your account number.
    next: choose
    on_exhausted: goodbye
  choose:
    kind: menu
    prompt: Press 1 for PIN.
    choices:
      - key: 1
        next: pin
    on_exhausted: goodbye
  pin:
    kind: authenticate
    method: pin
    prompt: Enter your PIN.
    failure_prompt: "No match. {attempts_left} left."
    next: main_menu
    on_failure: choose
    on_exhausted: goodbye
  main_menu:
    kind: menu
    prompt: Press 1 for an agent.
    choices:
      - key: 1
        next: agent
    on_exhausted: goodbye
  agent:
    kind: enqueue
    queue: general
    say: Connecting you.
  other_route:
    kind: hangup
    say: Please visit a branch.
  goodbye:
    kind: hangup
    say: Goodbye.
"""


def with_queue(text: str, name: str, requires: str = "one_factor", extra: str = "") -> str:
    """Declare one more queue under `queues:`, where every queue's requirement lives."""
    return edit(
        text,
        "queues:\n",
        f"queues:\n  {name}:\n    requires: {requires}\n    roles: [agent]\n{extra}",
    )


def check(text: str) -> list[Problem]:
    flow, marks = parse_flow_with_marks(text, FILE)
    return check_flow(flow, marks, FILE)


def only_error(text: str) -> Problem:
    found = errors(check(text))
    assert len(found) == 1, "\n".join(map(str, found))
    assert found[0].file == FILE
    return found[0]


def errors_about(text: str, fragment: str) -> list[Problem]:
    found = [p for p in errors(check(text)) if fragment in p.message]
    assert found, f"no error mentions {fragment!r}:\n" + "\n".join(map(str, check(text)))
    return found


class TestSoundFlows:
    def test_shipped_default_flow_has_no_problems(self) -> None:
        path = REPO_ROOT / "flows" / "default.yaml"
        flow, marks = load_flow_with_marks(path)
        assert check_flow(flow, marks, str(path)) == []

    def test_small_flow_has_no_problems(self) -> None:
        assert check(GOOD) == []

    def test_two_factor_queue_behind_pin_and_sms_is_fine(self) -> None:
        text = edit(GOOD, "    next: main_menu\n", "    next: sms\n")
        text += (
            "  sms:\n    kind: authenticate\n    method: sms_otp\n    prompt: Enter the code.\n"
            "    on_unavailable: goodbye\n"
            "    next: main_menu\n    on_exhausted: goodbye\n"
        )
        text = edit(text, "requires: one_factor", "requires: two_factor")
        assert errors(check(text)) == []

    def test_only_the_attempts_left_field_may_be_templated(self) -> None:
        assert frozenset({"attempts_left"}) == ALLOWED_FIELDS


class TestTheDoor:
    """No path from `start` reaches a queue without the assurance the queue requires."""

    def test_authenticate_failure_edge_to_a_queue(self) -> None:
        text = edit(GOOD, "    on_failure: choose\n", "    on_failure: agent\n")
        problem = only_error(text)
        assert (problem.line, problem.column) == (line_of(text, "queue: general"), 5)
        assert problem.path == "steps.agent.queue"
        assert "queue `general`" in problem.message
        assert "`identified`" in problem.message
        assert "`one_factor`" in problem.message
        assert "welcome -> identify -> choose -(choices[0].next)-> pin -(on_failure)-> agent" in (
            problem.message
        )
        assert "authenticate" in problem.hint

    def test_menu_that_skips_authentication(self) -> None:
        text = edit(
            GOOD,
            "      - key: 1\n        next: pin\n",
            "      - key: 1\n        next: pin\n      - key: 9\n        next: agent\n",
        )
        problem = only_error(text)
        assert problem.line == line_of(text, "queue: general")
        assert "welcome -> identify -> choose -(choices[1].next)-> agent" in problem.message
        assert "`identified`" in problem.message

    def test_exhausted_authentication_leading_to_a_queue(self) -> None:
        text = edit(
            GOOD,
            "    on_failure: choose\n    on_exhausted: goodbye",
            "    on_failure: choose\n    on_exhausted: agent",
        )
        problem = only_error(text)
        assert "pin -(on_exhausted)-> agent" in problem.message

    def test_queue_reached_before_identification_is_at_assurance_none(self) -> None:
        text = edit(GOOD, "    next: identify\n", "    next: agent\n")
        problem = errors_about(text, "queue `general`")[0]
        assert "`none`" in problem.message
        assert "welcome -> agent" in problem.message

    def test_two_factor_queue_reached_with_only_a_pin(self) -> None:
        text = edit(GOOD, "requires: one_factor", "requires: two_factor")
        problem = only_error(text)
        assert problem.line == line_of(text, "queue: general")
        assert "`one_factor`" in problem.message
        assert "(needs `two_factor`)" in problem.message
        assert "pin -> main_menu -(choices[0].next)-> agent" in problem.message

    def test_two_knowledge_factors_do_not_make_two_factor(self) -> None:
        text = edit(GOOD, "    next: main_menu\n", "    next: passcode\n")
        text += (
            "  passcode:\n    kind: authenticate\n    method: passcode\n    prompt: Say it.\n"
            "    next: main_menu\n    on_exhausted: goodbye\n"
        )
        text = edit(text, "requires: one_factor", "requires: two_factor")
        problem = only_error(text)
        assert "(needs `two_factor`)" in problem.message

    def test_each_queue_is_reported_once(self) -> None:
        text = edit(
            GOOD,
            "    on_failure: choose\n    on_exhausted: goodbye",
            "    on_failure: agent\n    on_exhausted: agent",
        )
        assert len(errors_about(text, "queue `general`")) == 1

    def test_every_open_queue_is_reported(self) -> None:
        text = edit(
            GOOD,
            "      - key: 1\n        next: pin\n",
            "      - key: 1\n        next: pin\n      - key: 8\n        next: agent\n"
            "      - key: 9\n        next: cards\n",
        )
        text = with_queue(text, "cards") + "  cards:\n    kind: enqueue\n    queue: cards\n"
        assert {p.path for p in errors(check(text))} == {
            "steps.agent.queue",
            "steps.cards.queue",
        }


class TestQueueRequirements:
    @pytest.mark.parametrize("level", ["none", "identified"])
    def test_queue_that_does_not_demand_authentication(self, level: str) -> None:
        # refused before any check runs: a queue's requirement cannot even be written that way
        text = edit(GOOD, "requires: one_factor", f"requires: {level}")
        with pytest.raises(FlowDefinitionError) as caught:
            parse_flow_with_marks(text, FILE)
        (problem,) = caught.value.problems
        assert problem.path == "queues.general.requires"
        assert (problem.line, problem.column) == (line_of(text, f"requires: {level}"), 5)
        assert "queue `general`" in problem.message
        assert "unauthenticated" in problem.message
        assert "one_factor" in problem.hint


class TestPromptsReadNoCustomerData:
    @pytest.mark.parametrize(
        "template",
        [
            "{customer.name}",
            "{name}",
            "{account}",
            "{0}",
            "{}",
            "{attempts_left.__class__}",
            "{customer[name]}",
        ],
    )
    def test_templated_field_is_refused(self, template: str) -> None:
        text = edit(GOOD, "say: Welcome.", f'say: "Welcome {template}."')
        problem = only_error(text)
        assert (problem.line, problem.path) == (line_of(text, 'say: "Welcome'), "steps.welcome.say")
        assert "never read customer data aloud" in problem.message
        assert "{attempts_left}" in problem.hint

    @pytest.mark.parametrize(
        ("old", "new", "path"),
        [
            ("prompt: Enter your PIN.", 'prompt: "Hi {name}, your PIN?"', "steps.pin.prompt"),
            (
                'failure_prompt: "No match. {attempts_left} left."',
                'failure_prompt: "No match, {name}."',
                "steps.pin.failure_prompt",
            ),
            (
                "    prompt: Enter your account number.\n",
                '    prompt: Enter your account number.\n    reprompt: "{phone}?"\n',
                "steps.identify.reprompt",
            ),
            ("say: Connecting you.", 'say: "Connecting {name}."', "steps.agent.say"),
            ("say: Goodbye.", 'say: "Goodbye {customer.name}."', "steps.goodbye.say"),
        ],
        ids=["prompt", "failure_prompt", "reprompt", "enqueue_say", "hangup_say"],
    )
    def test_every_spoken_field_is_checked(self, old: str, new: str, path: str) -> None:
        text = edit(GOOD, old, new)
        problem = only_error(text)
        assert problem.path == path
        assert "customer data" in problem.message

    def test_a_field_hidden_in_a_format_spec_is_refused(self) -> None:
        # `{attempts_left:{name}}` nests a second field inside the first one's format spec.
        text = edit(GOOD, "say: Welcome.", 'say: "Welcome {attempts_left:{name}}."')
        problem = only_error(text)
        assert problem.path == "steps.welcome.say"

    @pytest.mark.parametrize(
        "prompt",
        [
            "You have {attempts_left} attempts left.",
            "No braces at all.",
        ],
    )
    def test_allowed_prompts(self, prompt: str) -> None:
        assert check(edit(GOOD, "say: Welcome.", f'say: "{prompt}"')) == []

    @pytest.mark.parametrize(
        "broken", ["Hello {attempts_left", "Hello }", "Hello {", "Hello, press {{1}} for help."]
    )
    def test_broken_braces(self, broken: str) -> None:
        text = edit(GOOD, "say: Welcome.", f'say: "{broken}"')
        problem = only_error(text)
        assert problem.path == "steps.welcome.say"
        assert problem.line == line_of(text, 'say: "Hello')
        assert "broken template" in problem.message
        assert "{attempts_left}" in problem.hint


class _NoPorts:
    def account_for_caller(self, caller: str) -> str | None:
        return None

    def verify(self, state: CallState, method: str, answer: str | None) -> bool:
        return False


class TestCheckerAgreesWithEngine:
    """A prompt the checker lets through must be one the engine can speak, or calls crash."""

    @pytest.mark.parametrize(
        "template",
        [
            "{attempts_left}",
            "{attempts_left!s}",
            "{attempts_left:>3}",
            "{ attempts_left }",
            "{attempts_left:{name}}",
            "{attempts_left:s}",
        ],
    )
    def test_accepted_prompt_can_be_spoken(self, template: str) -> None:
        text = edit(GOOD, "say: Welcome.", f'say: "Welcome, {template} tries."')
        flow, marks = parse_flow_with_marks(text, FILE)
        if errors(check_flow(flow, marks, FILE)):
            return  # refused up front: an admin fixes it before any caller hears it
        actions = Engine(flow, _NoPorts()).start(CallState("CA1", "+14155550100", flow.start))
        assert isinstance(actions[0], Say)
        assert actions[0].text.startswith("Welcome, ")
        assert "{" not in actions[0].text


class TestReferences:
    def test_unknown_step_with_a_suggestion(self) -> None:
        text = edit(GOOD, "    next: main_menu\n", "    next: main_mneu\n")
        problem = only_error(text)
        assert (problem.line, problem.column) == (line_of(text, "next: main_mneu"), 5)
        assert problem.path == "steps.pin.next"
        assert problem.message == "no step named `main_mneu`"
        assert problem.hint == "did you mean `main_menu`?"

    def test_unknown_choice_target(self) -> None:
        text = edit(GOOD, "        next: agent\n", "        next: agnet\n")
        problem = only_error(text)
        assert problem.line == line_of(text, "next: agnet")
        assert problem.path == "steps.main_menu.choices[0].next"
        assert problem.hint == "did you mean `agent`?"

    def test_unknown_start_and_failure_route(self) -> None:
        text = edit(GOOD, "start: welcome", "start: welcom")
        text = edit(text, "failure_route: other_route", "failure_route: other_rout")
        found = errors(check(text))
        by_path = {p.path: p for p in found}
        assert set(by_path) == {"start", "authentication.failure_route"}
        assert by_path["start"].line == 2
        assert by_path["start"].hint == "did you mean `welcome`?"
        assert by_path["authentication.failure_route"].hint == "did you mean `other_route`?"

    def test_nothing_close_lists_the_steps(self) -> None:
        text = edit(
            GOOD, "    on_exhausted: goodbye\n  choose:", "    on_exhausted: zzz\n  choose:"
        )
        problem = only_error(text)
        assert problem.message == "no step named `zzz`"
        for step in ("welcome", "identify", "pin", "goodbye"):
            assert step in problem.hint


class TestSilentLoops:
    def test_say_goto_loop_without_input(self) -> None:
        text = edit(GOOD, "    next: identify\n", "    next: again\n")
        text += "  again:\n    kind: goto\n    next: welcome\n"
        found = errors(check(text))
        assert len(found) == 1
        assert "loops forever without input" in found[0].message
        assert "welcome -> again -> welcome" in found[0].message
        assert found[0].line == line_of(text, "next: again")

    def test_a_say_that_points_at_itself(self) -> None:
        text = edit(GOOD, "    next: identify\n", "    next: welcome\n")
        found = errors(check(text))
        assert ["loops forever" in p.message for p in found] == [True]

    def test_loop_through_a_menu_waits_for_the_caller(self) -> None:
        text = edit(GOOD, "    on_exhausted: goodbye\n  pin:", "    on_exhausted: again\n  pin:")
        text += "  again:\n    kind: say\n    say: Let us try again.\n    next: choose\n"
        assert check(text) == []


class TestFailureRoute:
    def test_failure_route_that_is_a_queue(self) -> None:
        text = edit(GOOD, "failure_route: other_route", "failure_route: agent")
        problems = errors_about(text, "after failed authentication")
        assert problems[0].path == "authentication.failure_route"
        assert problems[0].line == line_of(text, "failure_route: agent")
        assert "queue `general`" in problems[0].message
        assert "hangup" in problems[0].hint

    def test_failure_route_that_leads_to_a_queue(self) -> None:
        text = edit(GOOD, "failure_route: other_route", "failure_route: sorry")
        text += "  sorry:\n    kind: say\n    say: Sorry.\n    next: agent\n"
        problems = errors_about(text, "after failed authentication")
        assert "sorry -> agent" in problems[0].message

    def test_failure_route_through_a_menu_to_a_queue(self) -> None:
        text = edit(GOOD, "failure_route: other_route", "failure_route: main_menu")
        errors_about(text, "after failed authentication")


class TestAuthenticationOrder:
    def test_authenticate_before_identify(self) -> None:
        text = edit(GOOD, "    next: identify\n", "    next: pin\n")
        problem = errors_about(text, "has not claimed an account")[0]
        assert problem.path == "steps.pin"
        assert (problem.line, problem.column) == (line_of(text, "  pin:"), 3)
        assert "welcome -> pin" in problem.message
        assert "identify" in problem.hint

    def test_authenticate_reachable_both_ways_is_still_refused(self) -> None:
        text = edit(
            GOOD,
            "    next: identify\n",
            "    next: first\n  first:\n    kind: menu\n    prompt: Press 1 or 2.\n"
            "    choices:\n      - key: 1\n        next: identify\n      - key: 2\n"
            "        next: pin\n    on_exhausted: goodbye\n",
        )
        problem = errors_about(text, "has not claimed an account")[0]
        assert "first -(choices[1].next)-> pin" in problem.message


class TestUnreachableSteps:
    def test_unreachable_step_is_a_warning_not_an_error(self) -> None:
        text = GOOD + "  orphan:\n    kind: hangup\n    say: Nobody hears this.\n"
        problems = check(text)
        assert errors(problems) == []
        assert len(problems) == 1
        (warning,) = problems
        assert warning.severity == "warning"
        assert warning.path == "steps.orphan"
        assert (warning.line, warning.column) == (line_of(text, "  orphan:"), 3)
        assert "warning:" in str(warning)

    def test_unreachable_steps_are_not_door_checked(self) -> None:
        # A queue nobody can reach is no door; warn, do not fail the flow.
        text = with_queue(GOOD, "spare") + "  spare:\n    kind: enqueue\n    queue: spare\n"
        problems = check(text)
        assert errors(problems) == []
        assert [p.path for p in problems] == ["steps.spare"]


class TestEmailOnlyPossession:
    """Email is no longer an out-of-band authenticator (NIST SP 800-63B rev 4): a two_factor
    queue whose only possession factor is an email code is allowed, but the admin is warned."""

    EMAIL = (
        "  email:\n    kind: authenticate\n    method: email_otp\n    prompt: Enter the code.\n"
        "    on_unavailable: goodbye\n    next: main_menu\n    on_exhausted: goodbye\n"
    )

    def email_only(self) -> str:
        """PIN, then an email code, then the menu to a two_factor queue."""
        text = edit(GOOD, "    next: main_menu\n", "    next: email\n") + self.EMAIL
        return edit(text, "requires: one_factor", "requires: two_factor")

    def with_second_method(self, method: str) -> str:
        """PIN, then a menu offering an email code or `method`, both on to the queue."""
        text = edit(self.email_only(), "    next: email\n", "    next: second\n")
        text += (
            "  second:\n    kind: menu\n    prompt: Press 1 for email, 2 for another way.\n"
            "    choices:\n      - key: 1\n        next: email\n"
            "      - key: 2\n        next: other\n"
            "    on_exhausted: goodbye\n"
            f"  other:\n    kind: authenticate\n    method: {method}\n    prompt: Say or key it.\n"
            "    next: main_menu\n    on_exhausted: goodbye\n"
        )
        if method in ("sms_otp", "callback"):
            text += "    on_unavailable: goodbye\n"
        return text

    def test_email_as_the_only_possession_factor_is_a_warning(self) -> None:
        text = self.email_only()
        problems = check(text)
        assert errors(problems) == []  # served all the same
        assert len(problems) == 1, "\n".join(map(str, problems))
        (warning,) = problems
        assert warning.severity == "warning"
        assert warning.file == FILE
        assert warning.path == "queues.general.requires"
        assert (warning.line, warning.column) == (line_of(text, "requires: two_factor"), 5)
        assert "email" in warning.message
        assert "two_factor" in warning.message
        assert "sms_otp" in warning.hint
        assert "warning:" in str(warning)

    def test_email_only_queue_reached_through_a_menu_is_warned_once(self) -> None:
        # two routes to the queue, each with the email code: still email only, one warning
        text = edit(
            self.email_only(),
            "        next: agent\n",
            "        next: agent\n      - key: 2\n        next: agent\n",
        )
        text = edit(text, "Press 1 for an agent.", "Press 1 or 2 for an agent.")
        problems = check(text)
        assert [(p.severity, p.path) for p in problems] == [("warning", "queues.general.requires")]

    @pytest.mark.parametrize("method", ["sms_otp", "callback", "service_code"])
    def test_another_possession_route_removes_the_warning(self, method: str) -> None:
        assert check(self.with_second_method(method)) == []

    def test_a_second_knowledge_factor_does_not_remove_it(self) -> None:
        problems = check(self.with_second_method("passcode"))
        # the passcode route is a door error (one_factor); the email route is still warned
        assert [p.path for p in problems if p.severity == "warning"] == ["queues.general.requires"]

    def test_a_one_factor_queue_behind_an_email_code_is_not_warned(self) -> None:
        text = edit(self.email_only(), "requires: two_factor", "requires: one_factor")
        assert check(text) == []

    def test_shipped_default_flow_has_no_warnings(self) -> None:
        path = REPO_ROOT / "flows" / "default.yaml"
        flow, marks = load_flow_with_marks(path)
        problems = check_flow(flow, marks, str(path))
        assert [p for p in problems if p.severity == "warning"] == []
        assert errors(problems) == []
