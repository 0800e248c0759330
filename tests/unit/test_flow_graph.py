"""`ivr flows graph`: the picture shows every step and edge, the queues' requirements, the
failure route and, given a scenario run's coverage, which edges were taken."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.errors import IvrError
from ivr.flows.graph import Coverage, Edge, edges, flows_graph, to_mermaid, to_svg
from ivr.flows.loader import load_flow, parse_flow

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "flows" / "default.yaml"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def flow():
    return load_flow(DEFAULT)


def _mermaid_links(text: str) -> list[tuple[str, str, str, str]]:
    """(from, arrow, label, to) of every link line, in order."""
    found = re.findall(r'^  (\w+) (-->|-\.->)(?:\|"([^"]*)"\|)? (\w+)$', text, re.M)
    return [
        (a.removeprefix("s_"), arrow, label, b.removeprefix("s_")) for a, arrow, label, b in found
    ]


def _svg(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314 -- our own output


def test_mermaid_has_every_step_and_every_edge(flow) -> None:
    text = to_mermaid(flow)
    assert text.splitlines()[1] == "flowchart TD"
    for sid in flow.steps:
        assert re.search(rf"^  s_{sid}\W", text, re.M), sid
    links = _mermaid_links(text)
    assert links[0] == ("START", "-->", "", flow.start)
    drawn = [(a, b) for a, _, _, b in links[1:]]
    assert drawn == [(s, target) for s in flow.steps for _, target in flow.targets(s)]
    assert len(drawn) == 35  # every next, choice, on_failure, on_exhausted, on_unavailable


def test_mermaid_labels_choices_by_what_the_caller_does(flow) -> None:
    labels = {(a, b): label for a, _, label, b in _mermaid_links(to_mermaid(flow))}
    assert labels[("choose_method", "pin")] == "1 or pin"
    assert labels[("card_check", "service_code")] == "4 or service code"
    assert labels[("pin", "goodbye")] == "on_exhausted"
    assert labels[("call_back", "card_check")] == "on_unavailable"


def test_queues_show_their_whole_requirement(flow) -> None:
    text = to_mermaid(flow)
    cards = next(line for line in text.splitlines() if line.startswith("  s_cards_queue["))
    assert (
        "queue: card-services<br/>requires: two_factor<br/>unattested_requires: two_factor" in cards
    )
    assert "methods: pin, passcode, sms_otp, callback, service_code" in cards
    assert "roles: specialist, supervisor" in cards
    balances = next(line for line in text.splitlines() if line.startswith("  s_balance_queue["))
    assert "requires: one_factor" in balances and "methods" not in balances
    assert re.search(r"^  class s_balance_queue,s_cards_queue,s_agent_queue queue$", text, re.M)


def test_authentication_steps_are_marked_with_method_and_factor(flow) -> None:
    text = to_mermaid(flow)
    assert re.search(
        r"^  class s_pin,s_passcode,s_sms_code,s_call_back,s_service_code auth$", text, re.M
    )
    assert '  s_sms_code[["sms_code<br/>authenticate: sms_otp (possession)"]]' in text


def test_the_failure_route_is_marked(flow) -> None:
    text = to_mermaid(flow)
    routes = [link for link in _mermaid_links(text) if link[2] == "failure_route"]
    authenticate = [s for s, step in flow.steps.items() if step.kind == "authenticate"]
    assert routes == [(s, "-.->", "failure_route", "other_route") for s in authenticate]
    assert 's_other_route(["other_route<br/>hangup<br/>failure route"])' in text
    assert re.search(r"^  class s_other_route failure$", text, re.M)


def _half_coverage(flow) -> Coverage:
    taken = edges(flow)[::2]
    return Coverage(frozenset(e.source for e in taken) | {flow.start}, frozenset(taken))


def test_coverage_marks_covered_and_uncovered_edges_in_mermaid(flow) -> None:
    coverage = _half_coverage(flow)
    text = to_mermaid(flow, coverage)
    styles = dict(re.findall(r"^  linkStyle ([\d,]+) (stroke:#\w+)", text, re.M))
    index = {v: {int(i) for i in k.split(",")} for k, v in styles.items()}
    all_edges = edges(flow)
    # Link 0 is START's; link i + 1 is the flow's edge i.
    assert index["stroke:#2e7d32"] == {i + 1 for i, e in enumerate(all_edges) if i % 2 == 0}
    assert index["stroke:#c62828"] == {i + 1 for i, e in enumerate(all_edges) if i % 2 == 1}
    assert f"%% edges covered: {len(coverage.edges)} of {len(all_edges)}" in text
    assert "%% not covered: identify -(next)-> choose_method" in text
    unvisited = [s for s in flow.steps if s not in coverage.steps]
    assert f"  class {','.join('s_' + s for s in unvisited)} unvisited" in text


def test_no_coverage_no_coverage_marks(flow) -> None:
    text = to_mermaid(flow)
    assert "linkStyle" not in text and "unvisited" not in text


def test_svg_is_well_formed_with_one_box_per_step(flow) -> None:
    root = _svg(to_svg(flow))
    assert root.tag == f"{SVG}svg"
    boxes = root.findall(f"./{SVG}g[@class='step']")
    assert [b.get("data-step") for b in boxes] == list(flow.steps)
    assert all(len(b.findall(f"{SVG}rect")) == 1 for b in boxes)
    texts = {b.get("data-step"): [t.text for t in b.iter(f"{SVG}text")] for b in boxes}
    assert texts["cards_queue"][2:] == [
        "requires: two_factor",
        "unattested_requires: two_factor",
        "methods: pin, passcode, sms_otp, callback, service_code",
        "roles: specialist, supervisor",
    ]
    assert texts["other_route"][-1] == "failure route"
    drawn = [
        Edge(g.get("data-from"), g.get("data-field"), g.get("data-to"))
        for g in root.iter(f"{SVG}g")
        if "edge" in (g.get("class") or "").split()
    ]
    assert drawn == edges(flow)


def test_svg_boxes_do_not_overlap(flow) -> None:
    rects = [
        tuple(float(r.get(k)) for k in ("x", "y", "width", "height"))
        for g in _svg(to_svg(flow)).findall(f"./{SVG}g[@class='step']")
        for r in g.findall(f"{SVG}rect")
    ]
    for i, (x, y, w, h) in enumerate(rects):
        for x2, y2, w2, h2 in rects[i + 1 :]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y


def test_svg_marks_failure_route_and_coverage(flow) -> None:
    def styles(root: ET.Element) -> dict[Edge, str]:
        return {
            Edge(g.get("data-from"), g.get("data-field"), g.get("data-to")): g.get("class")
            for g in root.iter(f"{SVG}g")
            if (g.get("class") or "").startswith("edge ")
        }

    plain = styles(_svg(to_svg(flow)))
    assert {e for e, c in plain.items() if c == "edge failure"} == {
        e for e in edges(flow) if e.field == "authentication.failure_route"
    }
    coverage = _half_coverage(flow)
    root = _svg(to_svg(flow, coverage))
    marked = styles(root)
    assert {e for e, c in marked.items() if c == "edge covered"} == coverage.edges
    assert {e for e, c in marked.items() if c == "edge uncovered"} == set(edges(flow)) - set(
        coverage.edges
    )
    heading = next(root.iter(f"{SVG}text")).text
    assert f"edges covered {len(coverage.edges)}/{len(edges(flow))}" in heading


def test_a_choice_word_cannot_break_the_mermaid() -> None:
    flow = parse_flow(
        """
name: odd
start: menu
authentication: {failure_route: bye}
steps:
  menu:
    kind: menu
    input: dtmf speech
    prompt: Press pound or say quote.
    choices: [{key: "#", words: ['say "<b>" #quot;'], next: bye}]
    on_exhausted: bye
  bye: {kind: hangup}
"""
    )
    (link,) = [line for line in to_mermaid(flow).splitlines() if 's_menu -->|"#35;' in line]
    assert link == '  s_menu -->|"#35; or say #quot;#lt;b#gt;#quot; #35;quot;"| s_bye'


# ---- the coverage file ---------------------------------------------------------------------


def test_coverage_file_round_trips(flow, tmp_path: Path) -> None:
    coverage = _half_coverage(flow)
    path = tmp_path / "coverage.json"
    path.write_text(coverage.to_json(flow.name))
    data = json.loads(path.read_text())
    assert data["flow"] == "default"
    assert ["welcome", "next", "identify"] in data["edges"]
    result = CliRunner().invoke(flows_graph, [str(DEFAULT), "--coverage", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == to_mermaid(flow, coverage)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON"),
        ('{"edges": []}', 'expected {"steps"'),
        ('{"steps": [], "edges": [["a", "b"]]}', "[from, field, to]"),
        ('{"flow": "other", "steps": []}', "coverage of flow `other`, not `default`"),
        ('{"steps": ["gone"]}', "has no step `gone`; run the scenarios again"),
        (
            '{"steps": [], "edges": [["pin", "on_failure", "goodbye"]]}',
            "has no edge pin -(on_failure)-> goodbye; run the scenarios again",
        ),
    ],
)
def test_a_bad_or_stale_coverage_file_is_refused(tmp_path: Path, content, message) -> None:
    path = tmp_path / "coverage.json"
    path.write_text(content)
    result = CliRunner().invoke(flows_graph, [str(DEFAULT), "--coverage", str(path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, IvrError)
    assert message in str(result.exception)


# ---- the command ---------------------------------------------------------------------------


def test_output_file_format_follows_its_suffix(flow, tmp_path: Path) -> None:
    out = tmp_path / "default.svg"
    result = CliRunner().invoke(flows_graph, [str(DEFAULT), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == to_svg(flow)
    forced = CliRunner().invoke(flows_graph, [str(DEFAULT), "--format", "svg"])
    assert forced.output == to_svg(flow)


def test_an_invalid_flow_is_refused_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nstart: a\nauthentication: {failure_route: a}\nsteps:\n  a: {kind: say}\n"
    )
    result = CliRunner().invoke(flows_graph, [str(bad)])
    assert result.exit_code != 0
    assert "bad.yaml:5:" in str(result.exception)


def test_readme_embeds_the_default_flows_mermaid() -> None:
    """Regenerate with: ivr flows graph flows/default.yaml, pasted into the ```mermaid block."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Call flows", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```mermaid\n(.*?)```", section, re.S)
    printed = CliRunner().invoke(flows_graph, [str(DEFAULT)]).output
    assert block == printed
