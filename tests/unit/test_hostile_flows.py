"""Flow files written to hurt: whoever can edit a flow must not be able to stall or crash start-up.

Each hostile file is refused with one located line (`file:line:col: message (hint)`) through
`FlowDefinitionError`, by the loader and by `ivr flows check`, and never as a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.cli import cli
from ivr.errors import FlowDefinitionError, Problem
from ivr.flows.loader import (
    MAX_FLOW_BYTES,
    MAX_FLOW_DEPTH,
    MAX_FLOW_NODES,
    load_flow,
    parse_flow,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# The classic "billion laughs": 9 levels of 9 aliases, about 600 bytes, 9**9 strings once expanded.
BILLION_LAUGHS = 'lol0: &lol0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"lol{i}: &lol{i} [{','.join([f'*lol{i - 1}'] * 9)}]\n" for i in range(1, 10)
)
RECURSIVE = "name: loop\nstart: &a [*a]\n"
DEEP = "name: deep\nstart: " + "[" * 10_000 + "]" * 10_000 + "\n"


def only_problem(text: str, filename: str = "hostile.yaml") -> Problem:
    with pytest.raises(FlowDefinitionError) as info:
        parse_flow(text, filename)
    (problem,) = info.value.problems
    return problem


def test_the_billion_laughs_is_small() -> None:
    assert len(BILLION_LAUGHS.encode()) < 700


class TestAliasesAndAnchors:
    def test_billion_laughs_is_refused_at_its_first_anchor(self) -> None:
        problem = only_problem(BILLION_LAUGHS)
        assert (problem.line, problem.column) == (1, 7)
        assert problem.message == "YAML anchor `&lol0` is not allowed"
        assert "write the value out in full" in problem.hint

    def test_recursive_alias_is_refused_not_a_recursion_error(self) -> None:
        problem = only_problem(RECURSIVE)
        assert str(problem).startswith("hostile.yaml:2:8: YAML anchor `&a` is not allowed (")

    def test_an_alias_alone_is_refused_where_it_is_written(self) -> None:
        problem = only_problem("name: x\nstart: *nowhere\n")
        assert (problem.line, problem.column) == (2, 8)
        assert problem.message == "YAML alias `*nowhere` is not allowed"

    def test_an_anchor_in_a_real_flow_is_refused(self) -> None:
        text = (REPO_ROOT / "flows" / "default.yaml").read_text()
        text = text.replace("kind: hangup", "kind: &bye hangup", 1)
        problem = only_problem(text)
        line = next(i for i, t in enumerate(text.splitlines(), 1) if "&bye" in t)
        assert problem.line == line
        assert "anchor `&bye`" in problem.message


class TestSizeAndShape:
    def test_deep_nesting_is_refused_at_the_level_too_deep(self) -> None:
        problem = only_problem(DEEP)
        assert (problem.line, problem.column) == (2, 8 + MAX_FLOW_DEPTH - 1)
        assert problem.message == f"nested more than {MAX_FLOW_DEPTH} levels deep"

    def test_deep_block_nesting_is_refused(self) -> None:
        text = "name: deep\nstart:\n" + "".join(" " * i + "a:\n" for i in range(1, 200))
        assert "nested more than" in only_problem(text).message

    def test_too_many_values_are_refused(self) -> None:
        text = "name: wide\nstart: [" + "0," * MAX_FLOW_NODES + "0]\n"
        assert len(text.encode()) <= MAX_FLOW_BYTES
        problem = only_problem(text)
        assert problem.line == 2
        assert problem.message == f"more than {MAX_FLOW_NODES} values in one flow"

    def test_oversized_file_is_read_no_further_than_the_limit(self, tmp_path: Path) -> None:
        path = tmp_path / "huge.yaml"
        path.write_bytes(b"name: huge\n" + b"#" * (4 * MAX_FLOW_BYTES) + b"\n")
        with pytest.raises(FlowDefinitionError) as info:
            load_flow(path)
        (problem,) = info.value.problems
        assert str(problem).startswith(f"{path}: file is larger than {MAX_FLOW_BYTES} bytes (")


class TestValues:
    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("9" * 5000, "`99999999999999999999...` is not a valid int"),
            ("2001-13-45", "`2001-13-45` is not a valid timestamp"),
        ],
    )
    def test_a_value_yaml_cannot_build_is_a_located_problem(self, value: str, message: str) -> None:
        problem = only_problem(f"name: x\nstart: {value}\n")
        assert str(problem) == f"hostile.yaml:2:8: start: {message} (quote it)"


class TestFromDisk:
    @pytest.mark.parametrize(
        ("text", "where"),
        [(BILLION_LAUGHS, "1:7"), (RECURSIVE, "2:8"), (DEEP, f"2:{8 + MAX_FLOW_DEPTH - 1}")],
        ids=["billion-laughs", "recursive-alias", "deep-nesting"],
    )
    def test_loader_names_the_file_line_and_column(
        self, tmp_path: Path, text: str, where: str
    ) -> None:
        path = tmp_path / "hostile.yaml"
        path.write_text(text)
        with pytest.raises(FlowDefinitionError) as info:
            load_flow(path)
        assert str(info.value).startswith(f"{path}:{where}: ")
        assert "\n" not in str(info.value)

    @pytest.mark.parametrize(
        ("text", "where"),
        [(BILLION_LAUGHS, "1:7"), (RECURSIVE, "2:8"), (DEEP, f"2:{8 + MAX_FLOW_DEPTH - 1}")],
        ids=["billion-laughs", "recursive-alias", "deep-nesting"],
    )
    def test_flows_check_fails_with_one_located_line(
        self, tmp_path: Path, text: str, where: str
    ) -> None:
        path = tmp_path / "hostile.yaml"
        path.write_text(text)
        result = CliRunner().invoke(cli, ["flows", "check", str(path)])
        assert result.exit_code == 1
        assert result.exception is None or isinstance(result.exception, SystemExit)
        lines = result.output.strip().splitlines()
        assert len(lines) == 2, result.output
        assert lines[0].startswith(f"{path}:{where}: ")
        assert lines[1] == "Error: 1 of 1 flow file(s) failed the checks"

    def test_shipped_flows_still_pass(self) -> None:
        result = CliRunner().invoke(cli, ["flows", "check", str(REPO_ROOT / "flows")])
        assert result.exit_code == 0, result.output
        assert "ok  " in result.output


class TestOddCharacters:
    """What a paste leaves in a file: refused where it is, in one line (PyYAML's reader error
    carries no mark and spans two lines)."""

    @pytest.mark.parametrize("char", ["\x00", "\x1b", "\ufffe"], ids=["nul", "escape", "fffe"])
    def test_a_control_character_is_one_located_line(self, tmp_path: Path, char: str) -> None:
        path = tmp_path / "pasted.yaml"
        path.write_text(f"name: pasted\nstart: we{char}lcome\n", encoding="utf-8")
        result = CliRunner().invoke(cli, ["flows", "check", str(path)])
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 2, result.output
        assert lines[0].startswith(f"{path}:2:10: invalid YAML: character {char!r} is not allowed")
