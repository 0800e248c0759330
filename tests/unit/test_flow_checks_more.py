"""The caller's side of `ivr flows check`: prompts that say how to answer, Twilio's limits on
speech hints and on a TwiML document, what a `<Gather>` accepts against what a prompt asks.

Each test edits the shipped default flow the way an admin would, loads it as a file is loaded
(so problems carry real lines) and asserts what the admin reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.errors import FlowDefinitionError, Problem
from ivr.flows.checks import MAX_HINT_CHARS, MAX_HINTS, MAX_TWIML_BYTES, check_flow, errors
from ivr.flows.loader import parse_flow_with_marks

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT = (REPO_ROOT / "flows" / "default.yaml").read_text()
FILE = "default.yaml"


def edit(text: str, old: str, new: str) -> str:
    """Replace text that must be there, so a stale fixture cannot make a test pass vacuously."""
    assert text.count(old) == 1, f"fixture must contain {old!r} exactly once"
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} occurs {len(hits)} times"
    return hits[0]


def check(text: str) -> list[Problem]:
    flow, marks = parse_flow_with_marks(text, FILE)
    return check_flow(flow, marks, FILE)


def only_warning(text: str) -> Problem:
    problems = check(text)
    assert len(problems) == 1, "\n".join(map(str, problems))
    assert problems[0].severity == "warning", str(problems[0])
    return problems[0]


def test_the_shipped_flow_meets_every_rule() -> None:
    assert check(DEFAULT) == []


class TestPromptsSayHowToAnswer:
    def test_a_menu_that_never_mentions_a_key_is_warned_with_the_choice(self) -> None:
        text = edit(DEFAULT, "To enter a service code from our website, press 4.", "")
        warning = only_warning(text)
        assert warning.path == "steps.card_check.prompt"
        assert warning.line == line_of(text, "  card_check:") + 3
        assert "how to choose" in warning.message
        assert "press 4 or say service code (for `service_code`)" in warning.hint

    def test_a_choice_told_by_its_words_alone_is_enough(self) -> None:
        text = edit(DEFAULT, "To enter a service code from our website, press 4.", "")
        text = edit(text, "or say call me.", "or say call me. Or say service code.")
        assert check(text) == []

    def test_words_do_not_count_in_a_keypad_only_menu(self) -> None:
        text = edit(
            DEFAULT,
            "      - key: 1\n        words: [pin, pin number, keypad]\n",
            "      - key: 1\n",
        )
        text = edit(text, "        words: [passcode, pass code, password, pass phrase]\n", "")
        pin_menu = "    prompt: For PIN"
        text = edit(text, f"input: dtmf speech\n{pin_menu}", f"input: dtmf\n{pin_menu}")
        text = edit(text, "For PIN, press 1.", "Say PIN.")
        warning = only_warning(text)
        assert warning.path == "steps.choose_method.prompt"
        assert warning.hint == "mention press 1 (for `pin`)"

    def test_a_spelled_out_key_counts(self) -> None:
        text = edit(DEFAULT, "press 4.", "press four.")
        assert check(text) == []

    @pytest.mark.parametrize(
        ("step", "old", "new"),
        [
            (
                "identify",
                "please enter your account number, then pound. From your phone on\n"
                "      file, press star, pound.",
                "your account number? From your phone on file, use star.",
            ),
            ("pin", "Enter your PIN, then pound.", "Your PIN, please."),
        ],
    )
    def test_a_keypad_prompt_that_does_not_say_press_or_enter(
        self, step: str, old: str, new: str
    ) -> None:
        text = edit(DEFAULT, old, new)
        warning = only_warning(text)
        assert warning.path == f"steps.{step}.prompt"
        assert "keypad" in warning.message
        assert "press the pound key" in warning.hint

    def test_caller_id_that_the_prompt_never_offers(self) -> None:
        text = edit(DEFAULT, "file, press star, pound.", "file, press pound.")
        warning = only_warning(text)
        assert warning.path == "steps.identify.prompt"
        assert "caller_id: true" in warning.message

    def test_a_passcode_prompt_must_say_to_speak(self) -> None:
        text = edit(DEFAULT, "Please say your passcode.", "Your passcode, please.")
        warning = only_warning(text)
        assert warning.path == "steps.passcode.prompt"
        assert "Please say your passcode." in warning.hint

    def test_the_call_back_greeting_must_say_the_key_it_waits_for(self) -> None:
        text = edit(DEFAULT, "To continue, press 1.", "Stay on the line.")
        warning = only_warning(text)
        assert warning.path == "steps.call_back.answer_prompt"
        assert warning.line == line_of(text, "answer_prompt:")


class TestDigits:
    def test_a_prompt_asking_for_more_digits_than_the_step_takes(self) -> None:
        text = edit(DEFAULT, "enter your account number", "enter your 14-digit account number")
        warning = only_warning(text)
        assert warning.path == "steps.identify.prompt"
        assert warning.message == (
            "the prompt asks for 14-digit, but the step takes 6 to 12 digits"
        )

    def test_a_digit_count_within_the_range_is_fine(self) -> None:
        text = edit(DEFAULT, "enter your account number", "enter your 8 digit account number")
        assert check(text) == []

    def test_a_menu_key_pound_cannot_be_pressed(self) -> None:
        # Twilio ends the menu's <Gather> on `#` (its default finishOnKey) and sends no digit.
        choice = "      - key: 4\n        words: [service code, website code]\n"
        text = edit(DEFAULT, choice, '      - key: "#"\n')
        text = edit(text, "press 4.", "press pound.")
        (problem,) = check(text)
        assert problem.severity == "error"
        assert problem.path == "steps.card_check.choices[2].key"
        assert problem.line == line_of(text, 'key: "#"')
        assert "can never be pressed" in problem.message

    def test_a_pound_choice_still_said_is_only_a_warning(self) -> None:
        text = edit(DEFAULT, "      - key: 4\n", '      - key: "#"\n')
        text = edit(text, "press 4.", "press pound.")
        warning = only_warning(text)
        assert warning.message.endswith("(only said)")


class TestSpeechHints:
    def test_more_hints_than_twilio_takes(self) -> None:
        words = ", ".join(f"word{i}" for i in range(MAX_HINTS))
        text = edit(DEFAULT, "[balance, account balance]", f"[balance, account balance, {words}]")
        warning = only_warning(text)
        assert warning.path == "steps.main_menu.choices"
        assert f"make {MAX_HINTS + 10} speech hints" in warning.message

    def test_exactly_the_limit_is_fine(self) -> None:
        # the shipped menu has 2 + 4 + 4 words; add the rest up to 500
        words = ", ".join(f"word{i}" for i in range(MAX_HINTS - 10))
        text = edit(DEFAULT, "[balance, account balance]", f"[balance, account balance, {words}]")
        assert check(text) == []

    def test_a_hint_longer_than_twilio_takes(self) -> None:
        long = "x" * (MAX_HINT_CHARS + 1)
        text = edit(DEFAULT, "[card, lost card,", f"[card, {long},")
        warning = only_warning(text)
        assert warning.path == "steps.main_menu.choices[1].words[1]"
        assert warning.line == line_of(text, long)
        assert f"{MAX_HINT_CHARS + 1} characters" in warning.message

    def test_a_comma_inside_a_word_splits_the_hint(self) -> None:
        text = edit(DEFAULT, "[card, lost card,", '[card, "lost, stolen card",')
        warning = only_warning(text)
        assert warning.path == "steps.main_menu.choices[1].words[1]"
        assert "comma" in warning.message


class TestDocumentSize:
    def test_a_say_chain_over_64_kb_is_an_error_at_the_longest_text(self) -> None:
        long = "Welcome. " * (MAX_TWIML_BYTES // 9)
        text = edit(
            DEFAULT,
            "    say: Welcome to Example Bank.",
            f"    say: {long}\n    next: intro\n  intro:\n    kind: say\n"
            "    say: Welcome to Example Bank.",
        )
        found = errors(check(text))
        assert len(found) == 1, "\n".join(map(str, found))
        (problem,) = found
        assert problem.path == "steps.welcome.say"
        assert problem.line == line_of(text, "say: Welcome.")
        assert "step `welcome` would be sent" in problem.message
        assert "error 11750" in problem.message
        assert f"{len(long.strip())} characters" in problem.hint

    def test_a_long_failure_prompt_counts_with_the_question_after_it(self) -> None:
        # each alone fits; said one after the other in one response, they do not
        half = "No. " * (MAX_TWIML_BYTES // 8 + 100)
        text = edit(
            DEFAULT,
            "prompt: Enter your PIN, then pound.",
            f"prompt: Enter your PIN, then pound. {half}",
        )
        text = edit(
            text,
            "failure_prompt: That did not match our records. You have {attempts_left} "
            "attempt left.\n    next: main_menu\n    on_failure: choose_method",
            f"failure_prompt: {half}\n    next: main_menu\n    on_failure: pin",
        )
        (problem,) = errors(check(text))
        assert "entering step `pin`" in problem.message

    def test_xml_escaping_is_measured(self) -> None:
        # `&` is five bytes in the document: under the limit as text, over it as TwiML
        amps = "&" * (MAX_TWIML_BYTES // 5 + 10)
        text = edit(DEFAULT, "say: Connecting you to an agent.", f'say: "{amps}"')
        (problem,) = errors(check(text))
        assert problem.path == "steps.agent_queue.say"


class TestYamlSyntaxHints:
    """PyYAML reports an unclosed bracket or quote where it gave up, often lines later; the
    admin is sent to where it opens, with what to write."""

    def only(self, text: str) -> Problem:
        with pytest.raises(FlowDefinitionError) as info:
            parse_flow_with_marks(text, FILE)
        (problem,) = info.value.problems
        return problem

    def test_an_unclosed_bracket_points_at_the_bracket(self) -> None:
        text = edit(DEFAULT, "roles: [specialist, supervisor]", "roles: [specialist, supervisor")
        problem = self.only(text)
        assert (problem.line, problem.column) == (line_of(text, "roles: [specialist,"), 12)
        assert problem.message.startswith("invalid YAML: this `[` is never closed (noticed at")
        assert "`]`" in problem.hint

    def test_an_unclosed_brace(self) -> None:
        text = edit(DEFAULT, "name: default\n", "name: default\nvoice: {a: 1\n")
        problem = self.only(text)
        assert (problem.line, problem.column) == (line_of(text, "voice: {a: 1"), 8)
        assert "`}`" in problem.hint

    @pytest.mark.parametrize("quote", ['"', "'"])
    def test_an_unclosed_quote_points_at_the_quote(self, quote: str) -> None:
        old = "prompt: Please say your passcode."
        text = edit(DEFAULT, old, f"prompt: {quote}Please say your passcode.")
        problem = self.only(text)
        assert (problem.line, problem.column) == (line_of(text, "Please say your passcode"), 13)
        assert problem.message.startswith(f"invalid YAML: this quote `{quote}` is never closed")
        assert problem.hint == f"end the text with `{quote}`, or leave the quotes out"

    def test_a_tab_in_the_indentation(self) -> None:
        text = edit(DEFAULT, "    method: passcode\n", "\tmethod: passcode\n")
        problem = self.only(text)
        assert (problem.line, problem.column) == (line_of(text, "\tmethod: passcode"), 1)
        assert "a tab in the indentation" in problem.message
        assert problem.hint.startswith("indent with spaces")

    def test_a_colon_inside_unquoted_text(self) -> None:
        old = "prompt: Please say your passcode."
        text = edit(DEFAULT, old, "prompt: Note: say your passcode.")
        problem = self.only(text)
        assert problem.line == line_of(text, "Note: say your passcode")
        assert "put the whole text in quotes" in problem.hint
