"""Loading flow files: what an admin sees when the YAML they wrote is wrong.

Every problem must name the file, the line and column to jump to, and (where we can tell) a hint
saying what to write instead. Loading is safe: YAML tags that would build Python objects are
refused, never constructed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.errors import FlowDefinitionError, Problem
from ivr.flows.loader import (
    MAX_FLOW_BYTES,
    load_flow,
    load_flow_with_marks,
    parse_flow,
    parse_flow_with_marks,
)
from ivr.flows.schema import STEP_KINDS, EnqueueStep, Flow
from tests.support import line_of

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLOW = REPO_ROOT / "flows" / "default.yaml"
FILE = "test.yaml"

# A tiny valid flow with one step of each kind that has fields worth misspelling.
BASE = """\
name: tiny
start: hello
authentication:
  max_failures: 2
  failure_route: bye
queues:
  general:
    requires: one_factor
    roles: [agent]
steps:
  hello:
    kind: say
    say: Hello.
    next: ask_account
  ask_account:
    kind: identify
    prompt: Enter your account number.
    next: ask_pin
    on_exhausted: bye
  ask_pin:
    kind: authenticate
    method: pin
    prompt: Enter your PIN.
    next: pick
    on_exhausted: bye
  pick:
    kind: menu
    prompt: Press 1 for an agent.
    choices:
      - key: 1
        next: agent
    on_exhausted: bye
  agent:
    kind: enqueue
    queue: general
  bye:
    kind: hangup
    say: Goodbye.
"""


def edit(text: str, old: str, new: str, count: int = 1) -> str:
    """Replace text that must be there, so a stale fixture cannot make a test pass vacuously."""
    assert old in text, f"fixture no longer contains {old!r}"
    return text.replace(old, new, count)


def column_of(text: str, needle: str, occurrence: int = 1) -> int:
    line = text.splitlines()[line_of(text, needle, occurrence) - 1]
    return line.index(needle) + 1


def problems_in(text: str) -> list[Problem]:
    with pytest.raises(FlowDefinitionError) as info:
        parse_flow_with_marks(text, FILE)
    problems = info.value.problems
    assert problems, "a FlowDefinitionError must list at least one problem"
    return problems


def only_problem(text: str) -> Problem:
    problems = problems_in(text)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def problem_about(problems: list[Problem], fragment: str) -> Problem:
    matching = [p for p in problems if fragment in p.message]
    assert matching, f"no problem mentions {fragment!r}:\n" + "\n".join(map(str, problems))
    return matching[0]


class TestShippedFlow:
    def test_default_flow_loads(self) -> None:
        flow = load_flow(DEFAULT_FLOW)
        assert isinstance(flow, Flow)
        assert flow.name == "default"
        assert flow.start in flow.steps

    def test_default_flow_queues_all_demand_authentication(self) -> None:
        flow = load_flow(DEFAULT_FLOW)
        steps = [s for s in flow.steps.values() if isinstance(s, EnqueueStep)]
        assert steps
        assert {s.queue for s in steps} == set(flow.queues)
        assert all(q.requires in ("one_factor", "two_factor") for q in flow.queues.values())

    def test_marks_point_at_the_written_keys(self) -> None:
        text = DEFAULT_FLOW.read_text(encoding="utf-8")
        _, marks = load_flow_with_marks(DEFAULT_FLOW)
        assert marks[("steps", "identify")] == (line_of(text, "  identify:"), 3)
        assert marks[("authentication", "failure_route")] == (
            line_of(text, "failure_route:"),
            column_of(text, "failure_route:"),
        )

    def test_parse_and_load_agree(self) -> None:
        text = DEFAULT_FLOW.read_text(encoding="utf-8")
        assert parse_flow(text, str(DEFAULT_FLOW)) == load_flow(DEFAULT_FLOW)

    def test_base_fixture_is_valid(self) -> None:
        flow, _ = parse_flow_with_marks(BASE, FILE)
        assert set(flow.steps) == {"hello", "ask_account", "ask_pin", "pick", "agent", "bye"}


class TestProblemText:
    def test_reads_file_line_column_path_message_hint(self) -> None:
        problem = Problem("f.yaml", 3, 5, "steps.a.next", "no step named `x`", "did you mean `y`?")
        assert str(problem) == "f.yaml:3:5: steps.a.next: no step named `x` (did you mean `y`?)"

    def test_warning_is_labelled(self) -> None:
        problem = Problem("f.yaml", 3, 5, "steps.a", "unused", severity="warning")
        assert str(problem) == "f.yaml:3:5: warning: steps.a: unused"

    def test_error_message_lists_every_problem(self) -> None:
        error = FlowDefinitionError([Problem("f", 1, 1, "", "one"), Problem("f", 2, 1, "", "two")])
        assert str(error).splitlines() == ["f:1:1: one", "f:2:1: two"]
        assert error.first.message == "one"


class TestDuplicateKeys:
    def test_duplicate_key_in_a_step_points_at_the_second_one(self) -> None:
        text = edit(BASE, "    next: ask_account\n", "    next: ask_account\n    next: bye\n")
        problem = only_problem(text)
        assert "duplicate key `next`" in problem.message
        assert (problem.line, problem.column) == (line_of(text, "next: bye"), 5)
        assert problem.hint
        assert str(problem).startswith(f"{FILE}:{problem.line}:5: ")

    def test_duplicate_step_name(self) -> None:
        text = BASE + "  bye:\n    kind: hangup\n"
        problem = only_problem(text)
        assert "duplicate key `bye`" in problem.message
        assert (problem.line, problem.column) == (line_of(text, "  bye:", 2), 3)
        assert problem.path == "steps"

    def test_duplicate_top_level_key(self) -> None:
        text = BASE + "start: bye\n"
        problem = only_problem(text)
        assert "duplicate key `start`" in problem.message
        assert (problem.line, problem.column) == (line_of(text, "start:", 2), 1)

    def test_the_first_value_is_not_silently_replaced(self) -> None:
        # A duplicate `requires:` must never let the later (weaker) value win quietly.
        text = edit(
            BASE, "    requires: one_factor\n", "    requires: one_factor\n    requires: none\n"
        )
        with pytest.raises(FlowDefinitionError):
            parse_flow(text, FILE)


class TestUnknownKeys:
    @pytest.mark.parametrize(
        ("old", "typo_line", "typo", "meant"),
        [
            ("start: hello", "strat: hello", "strat", "start"),
            ("  max_failures: 2", "  max_failure: 2", "max_failure", "max_failures"),
            ("    requires: one_factor", "    requirs: one_factor", "requirs", "requires"),
            (
                "    on_exhausted: bye\n  ask_pin",
                "    on_exhaused: bye\n  ask_pin",
                "on_exhaused",
                "on_exhausted",
            ),
            ("    method: pin", "    methd: pin", "methd", "method"),
            ("        next: agent", "        nxt: agent", "nxt", "next"),
            ("    say: Goodbye.", "    sya: Goodbye.", "sya", "say"),
            # A `say` step: its kind has the same name as one of its fields.
            ("    next: ask_account", "    nxt: ask_account", "nxt", "next"),
        ],
        ids=[
            "top",
            "authentication",
            "queue",
            "identify",
            "authenticate",
            "choice",
            "hangup",
            "say",
        ],
    )
    def test_typo_is_pinned_to_its_line_with_a_suggestion(
        self, old: str, typo_line: str, typo: str, meant: str
    ) -> None:
        text = edit(BASE, old, typo_line)
        problem = problem_about(problems_in(text), f"unknown key `{typo}`")
        needle = typo_line.strip().split("\n")[0]
        assert (problem.line, problem.column) == (line_of(text, needle), column_of(text, typo))
        assert problem.hint == f"did you mean `{meant}`?"
        assert problem.path.endswith(typo)
        assert f"{FILE}:{problem.line}:{problem.column}:" in str(problem)

    def test_a_misspelt_requirement_is_not_silently_dropped(self) -> None:
        text = edit(BASE, "    requires: one_factor", "    requirs: one_factor")
        problems = problems_in(text)
        assert any("unknown key `requirs`" in p.message for p in problems)

    def test_far_off_key_lists_the_allowed_keys(self) -> None:
        text = edit(BASE, "    requires: one_factor", "    requires: one_factor\n    colour: red")
        problem = only_problem(text)
        assert problem.message == "unknown key `colour`"
        assert problem.line == line_of(text, "colour:")
        for key in ("requires", "methods", "roles", "unattested_requires"):
            assert key in problem.hint


class TestStepKind:
    def test_missing_kind_points_at_the_step_and_lists_kinds(self) -> None:
        text = BASE + "  extra:\n    say: Hi.\n    next: bye\n"
        problem = only_problem(text)
        assert "kind" in problem.message
        assert (problem.line, problem.column) == (line_of(text, "  extra:"), 3)
        for kind in STEP_KINDS:
            assert kind in problem.hint

    def test_unknown_kind_lists_allowed_kinds(self) -> None:
        text = BASE + "  extra:\n    kind: transfer\n    next: bye\n"
        problem = only_problem(text)
        assert "kind" in problem.message
        assert problem.line == line_of(text, "  extra:")
        for kind in STEP_KINDS:
            assert kind in problem.hint


class TestValues:
    def test_bad_requires_value_lists_the_levels(self) -> None:
        text = edit(BASE, "requires: one_factor", "requires: maybe")
        problem = only_problem(text)
        assert "`maybe`" in problem.message
        assert (problem.line, problem.column) == (line_of(text, "requires:"), 5)
        for level in ("one_factor", "two_factor"):
            assert level in problem.hint

    def test_bad_method_lists_methods(self) -> None:
        text = edit(BASE, "method: pin", "method: fingerprint")
        problem = only_problem(text)
        assert "`fingerprint`" in problem.message
        assert problem.line == line_of(text, "method:")
        assert "sms_otp" in problem.hint

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            ("    next: ask_pin", "    next: Ask-Pin"),  # identify
            ("        next: agent", "        next: Agent Queue"),  # menu choice
            ("  failure_route: bye", "  failure_route: 9bye"),  # authentication
            ("start: hello", "start: Hello"),  # top level
            ("    next: ask_account", "    next: Ask-Account"),  # say step
        ],
        ids=["identify", "choice", "failure_route", "start", "say"],
    )
    def test_bad_step_reference_is_pinned_to_its_line(self, old: str, new: str) -> None:
        text = edit(BASE, old, new)
        problem = only_problem(text)
        bad = new.split(": ", 1)[1]
        assert f"`{bad}` is not a valid step name" in problem.message
        assert "lower_case" in problem.hint
        assert problem.line == line_of(text, new.strip())

    def test_bad_step_name_is_pinned_to_its_line(self) -> None:
        text = BASE + "  Bad-Name:\n    kind: hangup\n"
        problem = only_problem(text)
        assert "`Bad-Name` is not a valid step name" in problem.message
        assert (problem.line, problem.column) == (line_of(text, "Bad-Name:"), 3)
        assert problem.hint

    def test_missing_required_key_names_it(self) -> None:
        text = edit(BASE, "    queue: general\n", "")
        problem = only_problem(text)
        assert problem.message == "missing required key `queue`"
        assert problem.hint == "add `queue: ...`"
        assert problem.line == line_of(text, "  agent:")


class TestYamlSyntax:
    def test_unclosed_bracket_reports_line(self) -> None:
        text = "name: tiny\nsteps:\n  a: [1, 2\n  b: 3\n"
        problem = only_problem(text)
        assert problem.message.startswith("invalid YAML")
        assert (problem.line, problem.column) == (3, 6)  # the `[`, not where PyYAML gave up

    def test_bad_indentation_reports_line(self) -> None:
        text = "name: tiny\n  start: x\n"
        problem = only_problem(text)
        assert problem.message.startswith("invalid YAML")
        assert problem.line == 2
        assert str(problem).startswith(f"{FILE}:2:")

    def test_tab_indentation_reports_line(self) -> None:
        problem = only_problem(edit(BASE, "    kind: hangup", "\tkind: hangup"))
        assert problem.message.startswith("invalid YAML")
        assert problem.line == line_of(BASE, "    kind: hangup")

    @pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
    def test_empty_file(self, text: str) -> None:
        problem = only_problem(text)
        assert problem.message == "file is empty"
        assert (problem.line, problem.column) == (1, 1)
        assert "name:" in problem.hint

    @pytest.mark.parametrize("text", ["- hello\n- bye\n", "just words\n", "42\n"])
    def test_top_level_must_be_a_mapping(self, text: str) -> None:
        problem = only_problem(text)
        assert problem.message == "a flow is a mapping"
        assert (problem.line, problem.column) == (1, 1)
        assert "name:" in problem.hint


class TestSafeLoading:
    def test_python_name_tag_on_a_value_is_refused(self) -> None:
        text = edit(BASE, "name: tiny", "name: !!python/name:os.system ''")
        problem = only_problem(text)
        assert "python/name" in problem.message
        assert (problem.line, problem.column) == (1, 7)

    def test_python_object_tag_on_a_mapping_is_refused(self) -> None:
        # The mapping underneath is a perfectly valid `authentication:` block; only the tag is
        # wrong, and a flow file has no use for it.
        text = edit(BASE, "authentication:\n", "authentication: !!python/object:os.system\n")
        problem = only_problem(text)
        assert "python/object" in problem.message
        assert problem.line == line_of(text, "authentication:")

    def test_python_apply_tag_on_a_list_is_refused(self) -> None:
        text = edit(BASE, "    choices:\n", "    choices: !!python/object/apply:os.system\n")
        problem = only_problem(text)
        assert "python/object/apply" in problem.message
        assert problem.line == line_of(text, "choices:")

    def test_python_tag_on_the_whole_document_is_refused(self) -> None:
        with pytest.raises(FlowDefinitionError):
            parse_flow("!!python/object:ivr.flows.schema.Flow\n" + BASE, FILE)

    def test_custom_include_tag_is_refused(self) -> None:
        text = edit(BASE, "say: Goodbye.", "say: !include secrets.yaml")
        problem = only_problem(text)
        assert problem.line == line_of(text, "!include")

    def test_merge_keys_are_refused(self) -> None:
        text = BASE + "  copy:\n    <<: {kind: hangup}\n"  # anchors: test_hostile_flows.py
        problem = only_problem(text)
        assert problem.line == line_of(text, "<<:")
        assert problem.path == "steps.copy"

    def test_nothing_is_constructed(self, tmp_path: Path) -> None:
        marker = tmp_path / "pwned"
        text = edit(
            BASE,
            "name: tiny",
            f"name: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path"
            f" ['{marker}']]",
        )
        with pytest.raises(FlowDefinitionError):
            parse_flow(text, FILE)
        assert not marker.exists()


class TestFileErrors:
    def test_non_utf8_file_names_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.yaml"
        path.write_bytes(BASE.replace("Goodbye.", "Au revoir, caf\xe9.").encode("latin-1"))
        with pytest.raises(FlowDefinitionError) as info:
            load_flow(path)
        (problem,) = info.value.problems
        assert problem.file == str(path)
        assert "utf-8" in problem.message.lower()
        assert str(problem).startswith(str(path))

    def test_missing_file_names_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "nope.yaml"
        with pytest.raises(FlowDefinitionError) as info:
            load_flow(path)
        (problem,) = info.value.problems
        assert problem.file == str(path)
        assert "cannot read" in problem.message

    def test_a_directory_is_not_a_flow(self, tmp_path: Path) -> None:
        with pytest.raises(FlowDefinitionError):
            load_flow(tmp_path)

    def test_oversized_file_is_refused_before_parsing(self) -> None:
        text = BASE + "# " + "x" * MAX_FLOW_BYTES + "\n"
        problem = only_problem(text)
        assert "larger than" in problem.message

    def test_errors_name_the_file_on_disk(self, tmp_path: Path) -> None:
        path = tmp_path / "typo.yaml"
        path.write_text(edit(BASE, "requires:", "requirs:"), encoding="utf-8")
        with pytest.raises(FlowDefinitionError) as info:
            load_flow(path)
        assert all(p.file == str(path) for p in info.value.problems)


class TestSeveralProblemsAtOnce:
    def test_every_problem_is_reported_with_its_own_line(self) -> None:
        text = edit(BASE, "    requires: one_factor", "    requires: maybe")
        text = edit(text, "    method: pin", "    methd: pin")
        text += "  extra:\n    kind: transfer\n"
        problems = problems_in(text)
        maybe = problem_about(problems, "`maybe`")
        methd = problem_about(problems, "unknown key `methd`")
        kind = problem_about(problems, "kind")
        assert maybe.line == line_of(text, "requires: maybe")
        assert methd.line == line_of(text, "methd:")
        assert kind.line == line_of(text, "  extra:")
        assert len(str(FlowDefinitionError(problems)).splitlines()) == len(problems)

    def test_every_duplicate_is_reported(self) -> None:
        text = edit(BASE, "    next: ask_account\n", "    next: ask_account\n    next: bye\n")
        text = edit(text, "    queue: general\n", "    queue: general\n    queue: other\n")
        problems = problems_in(text)
        assert [p.line for p in problems] == [line_of(text, "next: bye"), line_of(text, "other")]
