"""Pictures of a flow for the people who review it: Mermaid text (GitHub and most wikis draw it)
and a stand-alone SVG, both from the same edges the checks and the engine follow
(`Flow.targets`), so the picture cannot show a path the service does not take.

Both mark what a reviewer looks for first: the authentication steps, each queue with its whole
declaration (`requires`, `methods`, `unattested_requires`, `roles`), and the `failure_route`
every authenticate step falls to when the call's budget is spent. Given the coverage of a
scenario test run, they also mark which edges the scenarios took and which none did.

The coverage file (one per flow, written by the scenario runner, read by `--coverage`) is JSON:

    {"flow": "default",
     "steps": ["welcome", "identify", ...],
     "edges": [["welcome", "next", "identify"], ["pin", "on_failure", "choose_method"], ...]}

`steps` are the step ids visited; each edge is `[from step, field, to step]` with the field as
`Flow.targets` names it: `next`, `on_exhausted`, `on_failure`, `on_unavailable`,
`choices[<index>].next` or `authentication.failure_route`. `flow` is optional; when present it
must be the flow's `name`. A step or edge the flow does not have is an error (the coverage is of
another version of the flow), so a stale file never paints a wrong picture.

The SVG layout is a small layered drawing: steps ranked by their distance from `start`, the
steps that end a call (queues, hangups) on the bottom row, long and backward edges routed
through the rows between so no line crosses a box, and rows ordered to keep lines short.
"""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import click

from ivr.assurance import factor_of
from ivr.errors import IvrError
from ivr.flows.schema import (
    AuthenticateStep,
    EnqueueStep,
    Flow,
    HangupStep,
    IdentifyStep,
    MenuStep,
)

FAILURE_ROUTE = "authentication.failure_route"
Format = Literal["mermaid", "svg"]


class Edge(NamedTuple):
    source: str
    field: str
    target: str


@dataclass(frozen=True)
class Coverage:
    """What a scenario run visited in one flow."""

    steps: frozenset[str]
    edges: frozenset[Edge]

    def to_json(self, flow_name: str) -> str:
        """The file `--coverage` reads; the scenario runner writes it with this."""
        return json.dumps(
            {
                "flow": flow_name,
                "steps": sorted(self.steps),
                "edges": [list(e) for e in sorted(self.edges)],
            },
            indent=2,
        )


def edges(flow: Flow) -> list[Edge]:
    """Every edge of the flow, in the order its steps are written."""
    out = [Edge(sid, field, target) for sid in flow.steps for field, target in flow.targets(sid)]
    for edge in out:
        if edge.target not in flow.steps:
            raise IvrError(
                f"step `{edge.source}`: `{edge.field}` names no step `{edge.target}` "
                "(`ivr flows check` says more)"
            )
    return out


def parse_coverage(text: str, flow: Flow, source: str = "<coverage>") -> Coverage:
    """The coverage file's content, checked against the flow it claims to describe."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IvrError(f"{source}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise IvrError(f'{source}: expected {{"steps": [...], "edges": [[from, field, to], ...]}}')
    if data.get("flow", flow.name) != flow.name:
        raise IvrError(f"{source}: coverage of flow `{data['flow']}`, not `{flow.name}`")
    raw_edges = data.get("edges", [])
    if not isinstance(raw_edges, list) or not all(
        isinstance(e, list) and len(e) == 3 and all(isinstance(p, str) for p in e)
        for e in raw_edges
    ):
        raise IvrError(f"{source}: `edges` must be a list of [from, field, to] strings")
    steps = data["steps"]
    stale = "; run the scenarios again"
    for step in steps:
        if step not in flow.steps:
            raise IvrError(f"{source}: flow `{flow.name}` has no step `{step}`{stale}")
    known = set(edges(flow))
    covered = frozenset(Edge(*e) for e in raw_edges)
    for edge in sorted(covered - known):
        raise IvrError(
            f"{source}: flow `{flow.name}` has no edge {_describe(edge)}{stale}",
        )
    return Coverage(frozenset(steps), covered)


def load_coverage(path: str | Path, flow: Flow) -> Coverage:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IvrError(f"{path}: cannot read: {exc}") from None
    return parse_coverage(text, flow, str(path))


def _describe(edge: Edge) -> str:
    return f"{edge.source} -({edge.field})-> {edge.target}"


def step_lines(flow: Flow, step_id: str) -> list[str]:
    """What a box says: the step, its kind, and what a reviewer must see about it."""
    step = flow.steps[step_id]
    lines = [step_id]
    if isinstance(step, AuthenticateStep):
        lines.append(f"authenticate: {step.method} ({factor_of(step.method).value})")
    elif isinstance(step, IdentifyStep):
        lines.append("identify" + (" (or caller ID)" if step.caller_id else ""))
    elif isinstance(step, EnqueueStep):
        lines.append(f"queue: {step.queue}")
        queue = flow.queue_of(step)
        if queue is None:
            lines.append("not declared under queues:")
        else:
            lines.append(f"requires: {queue.requires}")
            if queue.unattested_requires:
                lines.append(f"unattested_requires: {queue.unattested_requires}")
            if queue.methods is not None:
                lines.append("methods: " + ", ".join(queue.methods))
            lines.append("roles: " + ", ".join(queue.roles))
    else:
        lines.append(step.kind)
    if step_id == flow.authentication.failure_route:
        lines.append("failure route")
    return lines


def edge_label(flow: Flow, edge: Edge) -> str:
    """A choice by what the caller presses or says, any other way out by its field name."""
    step = flow.steps[edge.source]
    if isinstance(step, MenuStep) and edge.field.startswith("choices["):
        choice = step.choices[int(edge.field[len("choices[") : edge.field.index("]")])]
        said = choice.words[0] if choice.words else None
        if choice.key is not None and said:
            return f"{choice.key} or {said}"
        return choice.key or said or ""
    if edge.field == "next":
        return ""
    return edge.field.removeprefix("authentication.")


def _role(flow: Flow, step_id: str) -> str:
    """The one style a step is drawn in."""
    step = flow.steps[step_id]
    if step_id == flow.authentication.failure_route:
        return "failure"
    if isinstance(step, AuthenticateStep):
        return "auth"
    if isinstance(step, IdentifyStep):
        return "identify"
    if isinstance(step, EnqueueStep):
        return "queue"
    if isinstance(step, MenuStep):
        return "menu"
    return "plain"


# ---- Mermaid ---------------------------------------------------------------------------------

_MERMAID_SHAPES = {
    "say": ('["', '"]'),
    "goto": ('["', '"]'),
    "menu": ('{{"', '"}}'),
    "identify": ('[/"', '"/]'),
    "authenticate": ('[["', '"]]'),
    "enqueue": ('[("', '")]'),
    "hangup": ('(["', '"])'),
}
_MERMAID_CLASSES = {
    "auth": "fill:#e3f2fd,stroke:#1565c0,stroke-width:2px",
    "identify": "fill:#fff8e1,stroke:#f9a825",
    "menu": "fill:#f3e5f5,stroke:#6a1b9a",
    "queue": "fill:#e8f5e9,stroke:#2e7d32,stroke-width:2px",
    "failure": "fill:#ffebee,stroke:#c62828,stroke-width:2px",
    "unvisited": "fill:#eeeeee,stroke:#9e9e9e,stroke-dasharray:4 3,color:#616161",
}
_COVERED_LINK = "stroke:#2e7d32,stroke-width:3px"
_UNCOVERED_LINK = "stroke:#c62828,stroke-width:2px,stroke-dasharray:3 3"


def _mermaid_text(text: str) -> str:
    """Mermaid's own entity codes: a choice's words are free text and may hold any of these."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text


def to_mermaid(flow: Flow, coverage: Coverage | None = None) -> str:
    """A `flowchart` of the flow. Node ids are the step ids behind `s_`: Mermaid refuses some
    words a step id may be (`end`) as ids."""
    links = edges(flow)
    out = [
        f"%% flow `{flow.name}`, drawn by `ivr flows graph`",
        "flowchart TD",
        '  START(("call"))',
        "  START --> " + _node_id(flow.start),
    ]
    for sid, step in flow.steps.items():
        open_, close = _MERMAID_SHAPES[step.kind]
        label = "<br/>".join(_mermaid_text(line) for line in step_lines(flow, sid))
        out.append(f"  {_node_id(sid)}{open_}{label}{close}")
    for edge in links:
        arrow = "-.->" if edge.field == FAILURE_ROUTE else "-->"
        label = edge_label(flow, edge)
        pipe = f'|"{_mermaid_text(label)}"|' if label else ""
        out.append(f"  {_node_id(edge.source)} {arrow}{pipe} {_node_id(edge.target)}")
    for name, style in _MERMAID_CLASSES.items():
        members = [_node_id(s) for s in flow.steps if _role(flow, s) == name]
        if name == "unvisited":
            members = [] if coverage is None else [
                _node_id(s) for s in flow.steps if s not in coverage.steps
            ]  # fmt: skip
        if members:
            out.append(f"  classDef {name} {style}")
            out.append(f"  class {','.join(members)} {name}")
    if coverage is not None:
        # Link 0 is the arrow from START; the flow's edges follow in order.
        covered = [str(i + 1) for i, e in enumerate(links) if e in coverage.edges]
        uncovered = [str(i + 1) for i, e in enumerate(links) if e not in coverage.edges]
        out.insert(1, f"%% edges covered: {len(covered)} of {len(links)}")
        for edge in links:
            if edge not in coverage.edges:
                out.insert(2, f"%% not covered: {_describe(edge)}")
        if covered:
            out.append(f"  linkStyle {','.join(covered)} {_COVERED_LINK}")
        if uncovered:
            out.append(f"  linkStyle {','.join(uncovered)} {_UNCOVERED_LINK}")
    return "\n".join(out) + "\n"


def _node_id(step_id: str) -> str:
    return f"s_{step_id}"


# ---- SVG -------------------------------------------------------------------------------------

_FONT = 12  # px, monospace: 0.6 em a character, so a box can be sized without a renderer
_CHAR = _FONT * 0.6
_LINE = 16
_PAD_X, _PAD_Y = 10, 8
_GAP_X, _GAP_Y = 28, 76  # between boxes in a row, between rows (edge labels live there)
_LANE = 14  # the width a line passing through a row takes
_MARGIN = 24
_LABEL_FONT = 10
_PORT = 12  # the least room between two edges meeting a box side
_BOX_STYLES = {  # fill, stroke
    "auth": ("#e3f2fd", "#1565c0"),
    "identify": ("#fff8e1", "#f9a825"),
    "menu": ("#f3e5f5", "#6a1b9a"),
    "queue": ("#e8f5e9", "#2e7d32"),
    "failure": ("#ffebee", "#c62828"),
    "plain": ("#fafafa", "#616161"),
}
_EDGE_STYLES = {  # colour, width, dash
    "normal": ("#546e7a", "1.4", ""),
    "failure": ("#c62828", "1.4", "6 4"),
    "covered": ("#2e7d32", "2.4", ""),
    "uncovered": ("#c62828", "1.6", "3 3"),
}


@dataclass
class _Node:
    key: str  # a step id, or a waypoint of a long edge
    rank: int
    width: float
    height: float
    lines: list[str]
    x: float = 0.0  # centre
    y: float = 0.0  # top


def _ranks(flow: Flow, links: list[Edge]) -> dict[str, int]:
    """Distance from `start`, then the steps that end a call on one last row."""
    rank = {flow.start: 0}
    queue = deque([flow.start])
    while queue:
        sid = queue.popleft()
        for _, target in flow.targets(sid):
            if target not in rank:
                rank[target] = rank[sid] + 1
                queue.append(target)
    leaves = {s for s in flow.steps if not flow.targets(s)}
    inner = sorted({r for s, r in rank.items() if s not in leaves})
    compact = {r: i for i, r in enumerate(inner)}
    out = {s: compact[r] for s, r in rank.items() if s not in leaves}
    unreachable = len(inner)
    for sid in flow.steps:
        if sid not in rank and sid not in leaves:
            out[sid] = unreachable
    last = max(out.values(), default=-1) + 1
    for sid in flow.steps:
        if sid in leaves:
            out[sid] = last
    return out


def _box(lines: list[str]) -> tuple[float, float]:
    return (
        max(len(line) for line in lines) * _CHAR + 2 * _PAD_X,
        len(lines) * _LINE + 2 * _PAD_Y,
    )


class _Layout:
    def __init__(self, flow: Flow, links: list[Edge]) -> None:
        rank = _ranks(flow, links)
        self.nodes: dict[str, _Node] = {}
        for sid in sorted(flow.steps, key=lambda s: rank[s]):
            lines = step_lines(flow, sid)
            self.nodes[sid] = _Node(sid, rank[sid], *_box(lines), lines)
        # Each edge as a chain of nodes, one per row it spans, drawn top to bottom.
        self.chains: list[list[str]] = []
        for i, edge in enumerate(links):
            upper, lower = edge.source, edge.target
            if rank[lower] < rank[upper]:
                upper, lower = lower, upper
            chain = [upper]
            for r in range(rank[upper] + 1, rank[lower]):
                key = f"{i}@{r}"
                self.nodes[key] = _Node(key, r, _LANE, 0, [])
                chain.append(key)
            chain.append(lower)
            self.chains.append(chain)
        ends = Counter(
            [(c[0], "bottom") for c in self.chains] + [(c[-1], "top") for c in self.chains]
        )
        for (key, _), count in ends.items():
            node = self.nodes[key]
            node.width = max(node.width, (count + 1) * _PORT + 2 * _PAD_X)
        self.rows: list[list[str]] = [[] for _ in range(max(rank.values()) + 1)]
        for key, node in self.nodes.items():
            self.rows[node.rank].append(key)
        self._order()
        self._place()

    def steps(self) -> list[_Node]:
        return [n for n in self.nodes.values() if n.lines]

    def _neighbours(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        up: dict[str, list[str]] = {k: [] for k in self.nodes}
        down: dict[str, list[str]] = {k: [] for k in self.nodes}
        for chain in self.chains:
            for a, b in itertools.pairwise(chain):
                if self.nodes[a].rank != self.nodes[b].rank:
                    down[a].append(b)
                    up[b].append(a)
        return up, down

    def _order(self) -> None:
        """Barycentre sweeps: each row sorted by the mean position of its neighbours."""
        up, down = self._neighbours()
        for sweep in range(8):
            rows = self.rows[1:] if sweep % 2 == 0 else self.rows[-2::-1]
            side = up if sweep % 2 == 0 else down
            for row in rows:
                where = {k: i for r in self.rows for i, k in enumerate(r)}
                before = {k: i for i, k in enumerate(row)}
                row.sort(key=lambda k, w=where, b=before, n=side: (_mean(n[k], w, b[k]), b[k]))

    def _place(self) -> None:
        """Rows packed left to right, then nudged towards their neighbours without overlap."""
        up, down = self._neighbours()
        y = _MARGIN + 28
        for row in self.rows:
            height = max((self.nodes[k].height for k in row), default=0)
            x = 0.0
            for key in row:
                node = self.nodes[key]
                node.x = x + node.width / 2
                node.y = y
                node.height = node.height or height
                x += node.width + _GAP_X
            y += height + _GAP_Y
        for sweep in range(6):
            rows = self.rows[1:] if sweep % 2 == 0 else self.rows[-2::-1]
            side = up if sweep % 2 == 0 else down
            for row in rows:
                self._nudge(row, side)
        left = min(n.x - n.width / 2 for n in self.nodes.values())
        for node in self.nodes.values():
            node.x += _MARGIN - left
        self.width = max(n.x + n.width / 2 for n in self.nodes.values()) + _MARGIN
        self.height = y - _GAP_Y + _MARGIN

    def _nudge(self, row: list[str], side: dict[str, list[str]]) -> None:
        want = []
        for key in row:
            near = side[key]
            node = self.nodes[key]
            want.append(sum(self.nodes[n].x for n in near) / len(near) if near else node.x)
        # Left to right, each at its wish or just right of the one before; then the row as a
        # whole shifted so it sits, on average, where it wished to.
        placed: list[float] = []
        for i, key in enumerate(row):
            node = self.nodes[key]
            x = want[i]
            if placed:
                prev = self.nodes[row[i - 1]]
                x = max(x, placed[-1] + (prev.width + node.width) / 2 + _GAP_X)
            placed.append(x)
        shift = sum(w - p for w, p in zip(want, placed, strict=True)) / len(row)
        for key, x in zip(row, placed, strict=True):
            self.nodes[key].x = x + shift


def _mean(keys: list[str], where: dict[str, int], default: int) -> float:
    return sum(where[k] for k in keys) / len(keys) if keys else default


def _ports(layout: _Layout) -> dict[tuple[int, str], float]:
    """Where each chain leaves or enters a box: spread along the side, in the order of the
    other ends, so an edge and its way back do not share a line."""
    ends: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for i, chain in enumerate(layout.chains):
        first, second = layout.nodes[chain[0]], layout.nodes[chain[1]]
        last, before = layout.nodes[chain[-1]], layout.nodes[chain[-2]]
        ends.setdefault((first.key, "bottom"), []).append((second.x, i))
        ends.setdefault((last.key, "top"), []).append((before.x, i))
    out: dict[tuple[int, str], float] = {}
    for (key, side), items in ends.items():
        node = layout.nodes[key]
        items.sort()
        span = node.width - 2 * _PAD_X
        for j, (_, i) in enumerate(items):
            out[(i, side)] = node.x - span / 2 + span * (j + 1) / (len(items) + 1)
    return out


def _points(layout: _Layout, chain: list[str], ports: dict[tuple[int, str], float], i: int):
    """The chain's points from its upper box's bottom to its lower box's top."""
    top, bottom = layout.nodes[chain[0]], layout.nodes[chain[-1]]
    points = [(ports[(i, "bottom")], top.y + top.height)]
    for key in chain[1:-1]:
        node = layout.nodes[key]
        points += [(node.x, node.y), (node.x, node.y + node.height)]
    points.append((ports[(i, "top")], bottom.y))
    return points


class _Box(NamedTuple):
    left: float
    top: float
    right: float
    bottom: float

    def overlaps(self, other: _Box) -> bool:
        return (
            self.left < other.right
            and other.left < self.right
            and self.top < other.bottom
            and other.top < self.bottom
        )


def _bezier(a: tuple[float, float], b: tuple[float, float], t: float) -> tuple[float, float]:
    """A point of one segment as `_path` draws it (control points at half height)."""
    (x0, y0), (x1, y1) = a, b
    mid = (y0 + y1) / 2
    u = 1 - t
    x = u**3 * x0 + 3 * u * u * t * x0 + 3 * u * t * t * x1 + t**3 * x1
    y = u**3 * y0 + 3 * u * u * t * mid + 3 * u * t * t * mid + t**3 * y1
    return x, y


class _LabelPlacer:
    """Puts each edge label on its edge, as near the step it leaves as it fits without covering
    a box or another label."""

    _TRIES = (0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6)

    def __init__(self, boxes: list[_Box]) -> None:
        self.taken = list(boxes)

    def place(self, points: list[tuple[float, float]], label: str) -> tuple[float, float]:
        half = len(label) * _LABEL_FONT * 0.3 + 5
        first: tuple[float, float] | None = None
        for a, b in itertools.pairwise(points):
            for t in self._TRIES:
                x, y = _bezier(a, b, t)
                box = _Box(x - half, y - 6, x + half, y + 6)
                first = first or (x, y)
                if not any(box.overlaps(other) for other in self.taken):
                    self.taken.append(box)
                    return x, y
        assert first is not None
        return first


def _path(points: list[tuple[float, float]]) -> str:
    (x0, y0), *rest = points
    out = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        mid = (y0 + y1) / 2
        out.append(f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(out)


def to_svg(flow: Flow, coverage: Coverage | None = None) -> str:
    links = edges(flow)
    layout = _Layout(flow, links)
    svg = ET.Element(
        "svg",
        xmlns="http://www.w3.org/2000/svg",
        width=f"{layout.width:.0f}",
        height=f"{layout.height:.0f}",
        viewBox=f"0 0 {layout.width:.0f} {layout.height:.0f}",
        **{"font-family": "ui-monospace, Menlo, Consolas, monospace", "font-size": str(_FONT)},
    )
    ET.SubElement(svg, "title").text = f"flow {flow.name}"
    defs = ET.SubElement(svg, "defs")
    for name, (colour, _, _) in _EDGE_STYLES.items():
        marker = ET.SubElement(
            defs,
            "marker",
            id=f"arrow-{name}",
            viewBox="0 0 10 10",
            refX="9",
            refY="5",
            markerUnits="userSpaceOnUse",
            markerWidth="9",
            markerHeight="9",
            orient="auto-start-reverse",
        )
        ET.SubElement(marker, "path", d="M0,0 L10,5 L0,10 z", fill=colour)
    ET.SubElement(svg, "rect", width="100%", height="100%", fill="white")
    heading = f"flow {flow.name}"
    if coverage is not None:
        taken = sum(e in coverage.edges for e in links)
        visited = sum(s in coverage.steps for s in flow.steps)
        heading += (
            f" · steps covered {visited}/{len(flow.steps)} · edges covered {taken}/{len(links)}"
            " (green: taken, red dashed: not taken)"
        )
    _text(svg, _MARGIN, _MARGIN + 4, heading, weight="bold")

    ports = _ports(layout)
    labels = ET.Element("g")
    placer = _LabelPlacer(
        [_Box(n.x - n.width / 2, n.y, n.x + n.width / 2, n.y + n.height) for n in layout.steps()]
    )
    for i, (edge, chain) in enumerate(zip(links, layout.chains, strict=True)):
        style = "failure" if edge.field == FAILURE_ROUTE else "normal"
        if coverage is not None:
            style = "covered" if edge in coverage.edges else "uncovered"
        colour, width, dash = _EDGE_STYLES[style]
        points = _points(layout, chain, ports, i)
        backward = chain[0] != edge.source
        group = ET.SubElement(
            svg,
            "g",
            {"class": f"edge {style}", "data-from": edge.source, "data-field": edge.field},
            **{"data-to": edge.target},
        )
        ET.SubElement(group, "title").text = _describe(edge)
        attrs = {"d": _path(points), "fill": "none", "stroke": colour, "stroke-width": width}
        if dash:
            attrs["stroke-dasharray"] = dash
        attrs["marker-start" if backward else "marker-end"] = f"url(#arrow-{style})"
        ET.SubElement(group, "path", attrs)
        label = edge_label(flow, edge)
        if label:
            x, y = placer.place(points[::-1] if backward else points, label)
            _text(labels, x, y + 3.5, label, size=_LABEL_FONT, colour=colour, anchor="middle",
                  halo=True)  # fmt: skip

    for sid in flow.steps:
        node = layout.nodes[sid]
        fill, stroke = _BOX_STYLES[_role(flow, sid)]
        dash = ""
        if coverage is not None and sid not in coverage.steps:
            fill, stroke, dash = "#eeeeee", "#9e9e9e", "4 3"
        group = ET.SubElement(svg, "g", {"class": "step", "data-step": sid})
        rect = {
            "x": f"{node.x - node.width / 2:.1f}",
            "y": f"{node.y:.1f}",
            "width": f"{node.width:.1f}",
            "height": f"{node.height:.1f}",
            "rx": "14" if isinstance(flow.steps[sid], HangupStep | EnqueueStep) else "4",
            "fill": fill,
            "stroke": stroke,
            "stroke-width": "3" if sid == flow.start else "1.5",
        }
        if dash:
            rect["stroke-dasharray"] = dash
        ET.SubElement(group, "rect", rect)
        top = node.y + (node.height - len(node.lines) * _LINE) / 2 + _LINE - 4
        for j, line in enumerate(node.lines):
            _text(group, node.x, top + j * _LINE, line, anchor="middle",
                  weight="bold" if j == 0 else "normal")  # fmt: skip
    svg.append(labels)
    ET.indent(svg)
    return ET.tostring(svg, encoding="unicode", xml_declaration=True) + "\n"


def _text(
    parent: ET.Element,
    x: float,
    y: float,
    text: str,
    *,
    size: int = _FONT,
    colour: str = "#212121",
    anchor: str = "start",
    weight: str = "normal",
    halo: bool = False,
) -> None:
    attrs = {
        "x": f"{x:.1f}",
        "y": f"{y:.1f}",
        "font-size": str(size),
        "fill": colour,
        "text-anchor": anchor,
        "font-weight": weight,
    }
    if halo:
        attrs |= {"stroke": "white", "stroke-width": "3", "paint-order": "stroke"}
    ET.SubElement(parent, "text", attrs).text = text


def render(flow: Flow, fmt: Format, coverage: Coverage | None = None) -> str:
    return to_svg(flow, coverage) if fmt == "svg" else to_mermaid(flow, coverage)


def _default_format(output: Path | None) -> Format:
    return "svg" if output is not None and output.suffix.lower() == ".svg" else "mermaid"


@click.command("graph")
@click.argument("flow_file", metavar="FLOW", type=click.Path(exists=True, dir_okay=False,
                path_type=Path))  # fmt: skip
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "svg"]),
    help="Default: svg for an --output ending in .svg, else mermaid.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of printing.")  # fmt: skip
@click.option(
    "--coverage",
    "coverage_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A scenario run's coverage JSON: mark the edges it took and those it did not.",
)
def flows_graph(
    flow_file: Path, fmt: Format | None, output: Path | None, coverage_file: Path | None
) -> None:
    """Draw a flow: its authentication steps, queues and what they require, the failure route,
    and with --coverage which edges the scenarios took."""
    from ivr.flows.loader import load_flow

    flow = load_flow(flow_file)
    coverage = load_coverage(coverage_file, flow) if coverage_file else None
    text = render(flow, fmt or _default_format(output), coverage)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise IvrError(f"{output}: cannot write: {exc}") from None
    click.echo(f"wrote {output}", err=True)
