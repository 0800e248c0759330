"""Flows are composed with libyaml when PyYAML has it (issue 9: `ivr flows check` on a
10,000-step flow), and both composers, libyaml's and the pure-Python fallback, keep the
positions and every refusal of the loader."""

from __future__ import annotations

import pytest
import yaml

from bench.flows import generate
from ivr.errors import FlowDefinitionError
from ivr.flows import loader
from ivr.flows.checks import check_flow
from tests.unit.test_hostile_flows import BILLION_LAUGHS, DEEP

COMPOSERS = loader._LOADERS  # libyaml's first, when PyYAML was built with it


def test_libyaml_composes_flows_when_pyyaml_has_it() -> None:
    assert yaml.__with_libyaml__, "PyYAML without libyaml: flows load about ten times slower"
    assert issubclass(loader.LOADER, yaml.CSafeLoader)


@pytest.mark.parametrize("composer", COMPOSERS, ids=lambda c: c.__name__)
def test_marks_are_the_written_lines_and_columns(composer: type) -> None:
    text = generate(300)
    data, marks = loader._compose(text, "large.yaml", loader_class=composer)
    lines = text.splitlines()
    for path in [("steps", "i1_sms", "method"), ("steps", "main_menu", "choices", 2, "next")]:
        line, column = marks[path]
        assert lines[line - 1][column - 1 :].startswith(f"{path[-1]}:")
    line, column = marks[("steps", "i1_check", "choices", 0)]
    assert lines[line - 1][column - 1 :].startswith("key: 1")
    assert data["steps"]["i1_sms"]["method"] == "sms_otp"


def test_both_composers_agree_on_a_large_flow() -> None:
    text = generate(300)
    results = [loader._compose(text, "f", loader_class=c) for c in COMPOSERS]
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("composer", COMPOSERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (BILLION_LAUGHS, (1, 7), "YAML anchor `&lol0` is not allowed"),
        ("name: x\nstart: *nowhere\n", (2, 8), "YAML alias `*nowhere` is not allowed"),
        (DEEP, (2, 8 + loader.MAX_FLOW_DEPTH - 1), "nested more than 32 levels deep"),
        ("name: x\nname: y\n", (2, 1), "duplicate key `name`"),
        ("name: x\nsteps:\n  a: [1, 2\n  b: 3\n", (3, 6), "invalid YAML: this `[` is never closed"),
        ("name: x\nsteps:\n  a:\n\tkind: hangup\n", (4, 1), "invalid YAML: a tab in the indent"),
        ("name: é😀\nstart: we\x1blcome\n", (2, 10), "invalid YAML: character '\\x1b' is not"),
    ],
    ids=["anchor", "alias", "deep", "duplicate", "bracket", "tab", "control"],
)
def test_every_refusal_is_kept(
    composer: type, text: str, where: tuple[int, int], message: str
) -> None:
    with pytest.raises(FlowDefinitionError) as info:
        loader._compose(text, "f.yaml", loader_class=composer)
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == where
    assert problem.message.startswith(message)


def test_a_flow_over_the_old_512_kib_limit_is_admitted_and_checks_clean() -> None:
    text = generate(3000)
    assert len(text.encode()) > 512 * 1024
    flow, marks = loader.parse_flow_with_marks(text, "large.yaml")
    assert len(flow.steps) >= 3000
    assert check_flow(flow, marks, "large.yaml") == []


def test_the_size_limit_names_itself_and_the_fix() -> None:
    with pytest.raises(FlowDefinitionError) as info:
        loader.parse_flow("name: x\n" + "#" * loader.MAX_FLOW_BYTES, "huge.yaml")
    (problem,) = info.value.problems
    assert problem.message == f"file is larger than {loader.MAX_FLOW_BYTES} bytes"
    assert "MAX_FLOW_BYTES" in problem.hint and "20,000 steps" in problem.hint
