"""Which steps of a flow its scenarios visited and which edges they took, shown with the
file:line:col of each one missed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ivr.flows.loader import Marks
from ivr.flows.schema import Flow

Edge = tuple[str, str, str]


@dataclass
class Coverage:
    flow: Flow
    marks: Marks
    file: str
    steps: set[str] = field(default_factory=set)
    edges: set[Edge] = field(default_factory=set)

    @property
    def all_edges(self) -> list[Edge]:
        return [(s, f, t) for s in self.flow.steps for f, t in self.flow.targets(s)]

    @property
    def edge_percent(self) -> float:
        edges = self.all_edges
        return 100.0 * sum(e in self.edges for e in edges) / len(edges) if edges else 100.0

    @property
    def step_percent(self) -> float:
        return 100.0 * len(self.steps & set(self.flow.steps)) / len(self.flow.steps)

    def position(self, step: str, field_name: str | None = None) -> str:
        path: tuple[str | int, ...] = ("steps", step)
        if field_name is not None and not field_name.startswith("authentication."):
            for part in re.findall(r"[a-z_]+|\[\d+\]", field_name):
                path += (int(part[1:-1]),) if part.startswith("[") else (part,)
        line, col = self.marks.get(path, self.marks.get(("steps", step), (None, None)))
        return f"{self.file}:{line}:{col}"

    def lines(self) -> list[str]:
        edges = self.all_edges
        seen_steps = len(self.steps & set(self.flow.steps))
        seen_edges = sum(e in self.edges for e in edges)
        out = [
            f"coverage of flow {self.flow.name} ({self.file}): steps {seen_steps}/"
            f"{len(self.flow.steps)} ({self.step_percent:.0f}%), edges {seen_edges}/"
            f"{len(edges)} ({self.edge_percent:.0f}%)"
        ]
        for step in self.flow.steps:
            if step not in self.steps:
                out.append(f"  not visited: {self.position(step)} step {step}")
        for source, field_name, target in edges:
            if (source, field_name, target) not in self.edges:
                out.append(
                    f"  not taken:   {self.position(source, field_name)} "
                    f"{source} --{field_name}--> {target}"
                )
        return out

    def to_json(self) -> dict[str, Any]:
        known = set(self.all_edges)
        return {
            "flow": self.flow.name,
            "steps": sorted(self.steps & set(self.flow.steps)),
            "edges": [list(e) for e in sorted(self.edges & known)],
        }
