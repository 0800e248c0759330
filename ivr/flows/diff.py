"""What changed between two versions of a flow, step by step: the steps added and removed, the
fields of each changed step, the queues, and the flow's own settings. A text diff shows moved
lines and comments; this shows what a caller would notice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ivr.flows.schema import Flow


@dataclass
class FlowDiff:
    steps_added: list[str] = field(default_factory=list)
    steps_removed: list[str] = field(default_factory=list)
    steps_changed: dict[str, list[str]] = field(default_factory=dict)  # step -> fields
    queues_added: list[str] = field(default_factory=list)
    queues_removed: list[str] = field(default_factory=list)
    queues_changed: dict[str, list[str]] = field(default_factory=dict)
    flow_changed: list[str] = field(default_factory=list)  # start, authentication.max_failures

    @property
    def empty(self) -> bool:
        return not any(vars(self).values())

    def lines(self, a: Flow, b: Flow) -> list[str]:
        if self.empty:
            return ["no change"]
        out = [f"~ flow: {', '.join(self.flow_changed)}"] if self.flow_changed else []
        out += [f"+ step {s} ({b.steps[s].kind})" for s in self.steps_added]
        out += [f"- step {s} ({a.steps[s].kind})" for s in self.steps_removed]
        out += [f"~ step {s}: {', '.join(f)}" for s, f in self.steps_changed.items()]
        out += [f"+ queue {q}" for q in self.queues_added]
        out += [f"- queue {q}" for q in self.queues_removed]
        out += [f"~ queue {q}: {', '.join(f)}" for q, f in self.queues_changed.items()]
        return out


def diff_flows(a: Flow, b: Flow) -> FlowDiff:
    before, after = a.model_dump(mode="json"), b.model_dump(mode="json")
    out = FlowDiff()
    out.steps_added, out.steps_removed, out.steps_changed = _named(before, after, "steps")
    out.queues_added, out.queues_removed, out.queues_changed = _named(before, after, "queues")
    rest = {k: v for k, v in before.items() if k not in ("steps", "queues")}
    out.flow_changed = _fields(rest, {k: v for k, v in after.items() if k in rest}, "")
    return out


def _named(
    before: dict[str, Any], after: dict[str, Any], what: str
) -> tuple[list[str], list[str], dict[str, list[str]]]:
    old, new = before[what], after[what]
    added = [n for n in new if n not in old]
    removed = [n for n in old if n not in new]
    changed = {n: _fields(old[n], new[n], "") for n in old if n in new and old[n] != new[n]}
    return added, removed, changed


def _fields(old: Any, new: Any, path: str) -> list[str]:
    """The dotted paths where `old` and `new` differ, as deep as both have the same shape: a
    list that grew or shrank is one change, a reworded choice names its own field."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else key
            found += _fields(old.get(key), new.get(key), sub)
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        if all(not isinstance(v, dict | list) for v in (*old, *new)):
            return [path]
        return [f for i, (o, n) in enumerate(zip(old, new, strict=True))
                for f in _fields(o, n, f"{path}[{i}]")]  # fmt: skip
    return [path]
