"""Static proofs about a flow, run by `ivr flows check` and before any flow is served.

The door check walks every path from `start`, carrying what the caller could have proved by
then, so a queue that some path reaches without its required assurance is found before a caller
finds it. Passing an `identify` step leaves the caller with nothing proved, as in the engine: a
claim drops every proof of the one before and voids its pending sends and codes (SECURITY 28),
so a flow may loop back to `identify` and the walk still judges each claim on its own proofs.

Each queue is judged by its one declaration under `queues:`: only proofs by its `methods` count,
and since any caller may come without caller ID attestation, every path must meet the stricter
of `requires` and `unattested_requires`.
"""

from __future__ import annotations

import difflib
from collections import deque
from dataclasses import dataclass

from ivr.assurance import Assurance, Factor, factor_of
from ivr.errors import Problem
from ivr.flows.loader import Marks, dotted
from ivr.flows.prompts import ALLOWED_FIELDS, placeholders, unbalanced
from ivr.flows.schema import (
    PROMPT_FIELDS,
    AuthenticateStep,
    EnqueueStep,
    Flow,
    GatherOptions,
    GotoStep,
    HangupStep,
    IdentifyStep,
    Queue,
    SayStep,
)

_State = tuple[str, "_Knowledge"]
_Seen = dict[_State, tuple[_State, str] | None]


@dataclass(frozen=True)
class _Knowledge:
    """What a caller may have proved at a point of a path."""

    identified: bool = False
    methods: frozenset[str] = frozenset()


def check_flow(flow: Flow, marks: Marks | None = None, filename: str = "<flow>") -> list[Problem]:
    """Every problem found, errors and warnings; a flow with any error must not be served."""
    checker = _Checker(flow, marks or {}, filename)
    checker.run()
    return checker.problems


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


class _Checker:
    def __init__(self, flow: Flow, marks: Marks, filename: str) -> None:
        self.flow = flow
        self.marks = marks
        self.filename = filename
        self.problems: list[Problem] = []

    def run(self) -> None:
        self._targets_exist()
        self._queues_declared()
        if any(p.severity == "error" for p in self.problems):
            return  # the graph walks below need every edge to lead somewhere
        self._prompts()
        self._door()
        self._unused_queues()
        self._failure_route_never_transfers()
        self._no_silent_loops()
        self._unreachable()

    def _add(
        self, path: tuple[str | int, ...], message: str, hint: str = "", severity: str = "error"
    ) -> None:
        located = path
        while located and located not in self.marks:
            located = located[:-1]
        line, col = self.marks.get(located, (None, None))
        self.problems.append(
            Problem(self.filename, line, col, dotted(path), message, hint, severity)
        )

    def _field_path(self, step_id: str, field: str) -> tuple[str | int, ...]:
        if field == "authentication.failure_route":
            return ("authentication", "failure_route")
        if field.startswith("choices["):
            index = int(field[len("choices[") : field.index("]")])
            return ("steps", step_id, "choices", index, "next")
        return ("steps", step_id, field)

    def _targets_exist(self) -> None:
        names = list(self.flow.steps)
        refs: list[tuple[tuple[str | int, ...], str]] = [(("start",), self.flow.start)]
        refs.append((("authentication", "failure_route"), self.flow.authentication.failure_route))
        for step_id in self.flow.steps:
            for field, target in self.flow.targets(step_id):
                if field != "authentication.failure_route":
                    refs.append((self._field_path(step_id, field), target))
        for path, target in refs:
            if target not in self.flow.steps:
                close = difflib.get_close_matches(target, names, n=1)
                hint = f"did you mean `{close[0]}`?" if close else f"steps are: {', '.join(names)}"
                self._add(path, f"no step named `{target}`", hint)

    def _prompts(self) -> None:
        allowed = ", ".join(f"{{{f}}}" for f in sorted(ALLOWED_FIELDS))
        for step_id, step in self.flow.steps.items():
            for field in PROMPT_FIELDS:
                text = getattr(step, field, None)
                if not text:
                    continue
                path = ("steps", step_id, field)
                if unbalanced(text):
                    self._add(
                        path,
                        "broken template: a `{` or `}` that is not part of a placeholder",
                        f"braces are only for {allowed}; spell the rest out",
                    )
                    continue
                for name in placeholders(text):
                    if name not in ALLOWED_FIELDS:
                        self._add(
                            path,
                            f"prompt templates `{{{name}}}`: never read customer data aloud",
                            f"remove it; a prompt may only use {allowed}",
                        )

    def _queues_declared(self) -> None:
        names = list(self.flow.queues)
        for step_id, step in self.flow.steps.items():
            if isinstance(step, EnqueueStep) and step.queue not in self.flow.queues:
                close = difflib.get_close_matches(step.queue, names, n=1)
                hint = (
                    f"did you mean `{close[0]}`?"
                    if close
                    else "declare it under `queues:` with its `requires:` and `roles:`"
                )
                self._add(
                    ("steps", step_id, "queue"), f"no queue `{step.queue}` under `queues:`", hint
                )

    def _unused_queues(self) -> None:
        used = {s.queue for s in self.flow.steps.values() if isinstance(s, EnqueueStep)}
        for name in self.flow.queues:
            if name not in used:
                self._add(
                    ("queues", name),
                    "no `enqueue` step sends callers to this queue",
                    "remove it or name it in a step's `queue:`",
                    severity="warning",
                )

    def _walk(
        self, start: str, knowledge: _Knowledge
    ) -> dict[tuple[str, _Knowledge], tuple[str, _Knowledge] | None]:
        """Every (step, what may be proved) reachable from `start`, with a parent for paths."""
        seen: dict[tuple[str, _Knowledge], tuple[str, _Knowledge] | None] = {
            (start, knowledge): None
        }
        todo = deque([(start, knowledge)])
        while todo:
            state = todo.popleft()
            step_id, know = state
            step = self.flow.steps[step_id]
            if isinstance(step, EnqueueStep | HangupStep):
                continue
            for field, target in self.flow.targets(step_id):
                after = know
                if field == "next" and isinstance(step, IdentifyStep):
                    after = _Knowledge(identified=True)  # a new claim drops proofs of the old one
                elif field == "next" and isinstance(step, AuthenticateStep):
                    after = _Knowledge(know.identified, know.methods | {step.method})
                nxt = (target, after)
                if nxt not in seen:
                    seen[nxt] = (state, field)
                    todo.append(nxt)
        return seen

    @staticmethod
    def _path(seen: _Seen, state: _State) -> str:
        """`a -> b -(on_failure)-> c`: the edge is named where it is not the plain `next`."""
        text = state[0]
        link = seen[state]
        while link is not None:
            parent, field = link
            arrow = " -> " if field == "next" else f" -({field})-> "
            text = parent[0] + arrow + text
            link = seen[parent]
        return text

    def _door(self) -> None:
        seen = self._walk(self.flow.start, _Knowledge())
        reported: set[str] = set()
        possession: dict[str, set[str]] = {}
        for state in seen:
            step_id, know = state
            step = self.flow.steps[step_id]
            if isinstance(step, EnqueueStep):
                queue = self.flow.queues[step.queue]
                req = queue.requirement
                counted = know.methods & req.methods
                held = {m for m in counted if factor_of(m) is Factor.possession}
                possession.setdefault(step.queue, set()).update(held)
                level = req.level_of(know.identified, know.methods)
                if level < req.strictest and step_id not in reported:
                    reported.add(step_id)
                    self._shut_door(seen, state, step, queue, level)
            if (
                isinstance(step, AuthenticateStep)
                and not know.identified
                and step_id not in reported
            ):
                reported.add(step_id)
                route = self._path(seen, state)
                self._add(
                    ("steps", step_id),
                    f"authenticates a caller who has not claimed an account, by {route}",
                    "put an `identify` step before it",
                )

        for name, queue in self.flow.queues.items():
            accepted = {m for m in queue.requirement.methods if factor_of(m) is Factor.possession}
            if queue.requirement.strictest is Assurance.two_factor and (
                possession.get(name) == {"email_otp"} or accepted == {"email_otp"}
            ):
                where = "methods" if queue.methods is not None else "requires"
                self._add(
                    ("queues", name, where),
                    "email is the only possession factor this two_factor queue gets; "
                    "NIST SP 800-63B rev 4 no longer accepts email as an out-of-band authenticator",
                    "offer sms_otp, callback or service_code as well, and leave email_otp out "
                    "of the queue's `methods`",
                    severity="warning",
                )

    def _shut_door(
        self, seen: _Seen, state: _State, step: EnqueueStep, queue: Queue, level: Assurance
    ) -> None:
        req = queue.requirement
        why = ""
        if req.strictest > req.level:
            why = " when caller ID is not attested"
        ignored = sorted(state[1].methods - req.methods)
        if ignored:
            why += f"; {', '.join(ignored)} does not count for it"
        hint = "put an `authenticate` step on that path before the queue"
        if queue.methods is not None:
            hint += f", by one of {', '.join(queue.methods)}"
        self._add(
            ("steps", state[0], "queue"),
            f"a caller can reach queue `{step.queue}` with assurance `{level.name}` "
            f"(needs `{req.strictest.name}`{why}) by {self._path(seen, state)}",
            hint,
        )

    def _failure_route_never_transfers(self) -> None:
        route = self.flow.authentication.failure_route
        full = _Knowledge(True, frozenset({"pin", "sms_otp"}))  # even a fully proved caller
        seen = self._walk(route, full)
        for state in seen:
            step = self.flow.steps[state[0]]
            if isinstance(step, EnqueueStep):
                self._add(
                    ("authentication", "failure_route"),
                    f"after failed authentication a caller can still reach queue `{step.queue}` by "
                    + self._path(seen, state),
                    "end the failure route with a `hangup` that names another route",
                )
                return

    def _no_silent_loops(self) -> None:
        """A cycle of say/goto steps would loop forever without waiting for the caller; so
        would one through an `authenticate` step, once its method is proved (the engine never
        asks for a proved factor again)."""
        for start_id in self.flow.steps:
            cursor, visited = start_id, []
            while isinstance(
                step := self.flow.steps[cursor], SayStep | GotoStep | AuthenticateStep
            ):
                if cursor in visited:
                    loop = " -> ".join([*visited[visited.index(cursor) :], cursor])
                    self._add(
                        ("steps", cursor, "next"),
                        f"loops forever without input: {loop}",
                        "send one of these steps to a menu or a hangup",
                    )
                    return
                visited.append(cursor)
                cursor = step.next

    def _unreachable(self) -> None:
        reachable = {step_id for step_id, _ in self._walk(self.flow.start, _Knowledge())}
        for step_id in self.flow.steps:
            if step_id not in reachable:
                self._add(
                    ("steps", step_id),
                    "no path from `start` reaches this step",
                    "remove it or point a `next` at it",
                    severity="warning",
                )


def is_gather(step: object) -> bool:
    return isinstance(step, GatherOptions)
