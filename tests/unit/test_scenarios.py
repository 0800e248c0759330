"""`ivr flows test`: scenario files, their errors, failures with transcripts, coverage and the
caller-time estimate; and the shipped scenarios, which must visit every edge of the default
flow (so CI runs them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.errors import FlowDefinitionError
from ivr.flows.caller_time import ANSWER_SECONDS, speech_seconds
from ivr.flows.scenario_runner import flows_test, run_file
from ivr.flows.scenarios import load_scenarios

REPO = Path(__file__).resolve().parents[2]

TINY_FLOW = """\
name: tiny
start: hello
authentication: {max_failures: 2, failure_route: bye}
queues:
  general: {requires: one_factor, roles: [agent]}
steps:
  hello: {kind: say, say: Hello there caller, next: who}
  who:
    kind: identify
    prompt: Enter your account number then press pound
    timeout: 4
    next: pin
    on_exhausted: bye
  pin:
    kind: authenticate
    method: pin
    prompt: Enter your PIN then press pound
    next: queue
    on_exhausted: bye
  queue: {kind: enqueue, queue: general, say: Connecting you now}
  bye: {kind: hangup, say: Goodbye}
"""

CUSTOMERS = """\
customers:
  - {account: "12345678", phone: "+15005550006", pin: "583920", passcode: purple elephant 42}
"""

PIN_CALL = """\
flow: tiny
{customers}
scenarios:
  - name: silent once, then a PIN
    steps:
      - silence: true
      - hear: Sorry, I didn't catch that
      - press: "12345678#"
      - press: "583920#"
      - queue: {queue}
"""


def tiny(tmp_path: Path, scenarios: str) -> Path:
    (tmp_path / "tiny.yaml").write_text(TINY_FLOW)
    (tmp_path / "tests").mkdir()
    path = tmp_path / "tests" / "tiny.yaml"
    path.write_text(scenarios)
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(flows_test, list(args))
    return result.exit_code, result.output


# -- the model ---------------------------------------------------------------------------------


def test_an_unknown_key_is_reported_at_its_line_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "scenarios:\n  - name: one\n    steps:\n      - press: '1'\n      - hera: hello\n"
    )
    with pytest.raises(FlowDefinitionError) as caught:
        load_scenarios(path)
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (5, 9)
    assert str(problem).startswith(f"{path}:5:9: scenarios[0].steps[1].hera: unknown key")
    assert "did you mean `hear`?" in str(problem)


def test_a_step_that_does_two_things_and_a_bad_regex_are_both_reported(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "scenarios:\n"
        "  - name: one\n"
        "    steps:\n"
        "      - {press: '1', say: hello}\n"
        "      - hear_re: 'agent ('\n"
    )
    with pytest.raises(FlowDefinitionError) as caught:
        load_scenarios(path)
    first, second = caught.value.problems
    assert (first.line, first.column) == (4, 9)
    assert "a step does one thing (press, say)" in first.message
    assert (second.line, second.column) == (5, 9)
    assert "not a regular expression" in second.message


def test_a_yaml_error_has_its_position_too(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("scenarios:\n  - name: [unclosed\n")
    code, output = invoke(str(path))
    assert code == 1
    assert f"{path}:2:11: invalid YAML: this `[` is never closed" in output  # where it opens


# -- running -----------------------------------------------------------------------------------


def test_a_passing_scenario_prints_pass_and_no_transcript(tmp_path: Path) -> None:
    path = tiny(tmp_path, PIN_CALL.format(customers=CUSTOMERS, queue="general"))
    code, output = invoke(str(path))
    assert code == 0, output
    assert f"PASS  {path}:6  silent once, then a PIN" in output
    assert "transcript" not in output


def test_a_failing_expectation_fails_with_its_place_and_the_transcript(tmp_path: Path) -> None:
    path = tiny(tmp_path, PIN_CALL.format(customers=CUSTOMERS, queue="balances"))
    code, output = invoke(str(path))
    assert code == 1
    assert f"FAIL  {path}:6  silent once, then a PIN" in output
    assert f"{path}:12:9 step 5: expected queue 'balances', got queue 'general'" in output
    transcript = output.split("transcript:")[1]
    assert "IVR: Hello there caller" in transcript
    assert "CALLER stays silent" in transcript
    assert "CALLER pressed 583920#" in transcript
    assert "-> enqueued" in transcript


def test_a_wrong_pin_for_an_unknown_customer_never_reaches_the_queue(tmp_path: Path) -> None:
    path = tiny(tmp_path, PIN_CALL.format(customers="", queue="general"))
    code, output = invoke(str(path))
    assert code == 1
    assert f"{path}:10:9 step 5: `queue: general` but the IVR asks on" in output
    assert "IVR: That did not match our records." in output


def test_the_ivr_asking_more_than_scripted_fails_with_what_it_said(tmp_path: Path) -> None:
    scenarios = "flow: tiny\nscenarios:\n  - name: short\n    steps:\n      - press: '12345678#'\n"
    code, output = invoke(str(tiny(tmp_path, scenarios)))
    assert code == 1
    assert "the IVR asked for more input than scripted; it last said: 'Enter your PIN" in output


# -- coverage ----------------------------------------------------------------------------------


def test_coverage_counts_steps_and_edges_and_names_what_was_missed(tmp_path: Path) -> None:
    path = tiny(tmp_path, PIN_CALL.format(customers=CUSTOMERS, queue="general"))
    out = tmp_path / "coverage.json"
    code, output = invoke(str(path), "--coverage-out", str(out))
    assert code == 0, output
    flow = tmp_path / "tiny.yaml"
    assert f"coverage of flow tiny ({flow}): steps 4/5 (80%), edges 3/6 (50%)" in output
    assert f"not visited: {flow}:21:3 step bye" in output
    assert f"not taken:   {flow}:13:5 who --on_exhausted--> bye" in output
    assert f"not taken:   {flow}:14:3 pin --authentication.failure_route--> bye" in output
    assert json.loads(out.read_text()) == {
        "flow": "tiny",
        "steps": ["hello", "pin", "queue", "who"],
        "edges": [["hello", "next", "who"], ["pin", "next", "queue"], ["who", "next", "pin"]],
    }


def test_min_coverage_fails_below_the_threshold_only(tmp_path: Path) -> None:
    path = tiny(tmp_path, PIN_CALL.format(customers=CUSTOMERS, queue="general"))
    code, output = invoke(str(path), "--min-coverage", "60")
    assert code == 1
    assert "edge coverage of flow tiny is 50.0%, below --min-coverage 60%" in output
    code, output = invoke(str(path), "--min-coverage", "50")
    assert code == 0, output


# -- caller time -------------------------------------------------------------------------------


def test_caller_time_adds_speech_timeouts_and_answers(tmp_path: Path) -> None:
    path = tiny(tmp_path, PIN_CALL.format(customers=CUSTOMERS, queue="general"))
    [result], *_ = run_file(path)
    assert result.passed, result.failure
    assert speech_seconds("Hello there caller") == pytest.approx(1.2)  # 3 words at 150 wpm
    authenticated = (
        speech_seconds("Hello there caller")
        + speech_seconds("Enter your account number then press pound")
        + 4  # the identify step's timeout, in silence
        + speech_seconds("Sorry, I didn't catch that.")
        + speech_seconds("Enter your account number then press pound")
        + ANSWER_SECONDS
        + speech_seconds("Enter your PIN then press pound")
        + ANSWER_SECONDS
    )
    assert authenticated == pytest.approx(18.2)
    assert result.to_authenticated == pytest.approx(authenticated)
    assert result.to_queue == pytest.approx(authenticated + speech_seconds("Connecting you now"))


# -- the shipped scenarios ---------------------------------------------------------------------


def test_the_shipped_scenarios_pass_and_cover_every_edge_of_the_default_flow() -> None:
    code, output = invoke(str(REPO / "flows" / "tests"), "--min-coverage", "100")
    assert code == 0, output
    assert "0 failed" in output
    assert "steps 15/15 (100%), edges 35/35 (100%)" in output
    pin = next(line for line in output.splitlines() if "a PIN caller reaches" in line)
    # The goal for the default flow: a PIN caller authenticated in under 20 s.
    match = re.search(r"authenticated (\d+\.\d) s", pin)
    assert match is not None, pin
    assert float(match.group(1)) < 20.0, pin
