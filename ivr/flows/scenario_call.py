"""The caller of one scenario: answers each gather from the script, checks the expectations
against what was heard and what reached the queue, and keeps the caller's clock
(ivr.flows.caller_time)."""

from __future__ import annotations

import re
from typing import Any

from ivr.flows.caller_time import ANSWER_SECONDS, speech_seconds
from ivr.flows.loader import Marks
from ivr.flows.scenarios import Scenario, Step
from ivr.simulator import CallPlayer, CallResult, Gather, Keys, Speech

CALLBACK_NUMBER = "+15005550001"  # the number the call back comes from (our caller ID)


class ScenarioFailed(Exception):
    """A scenario's expectation or script does not hold; the message says which and where."""


class ScenarioCall:
    """The caller of one scenario, across its calls: the `InputSource` every player asks, the
    observer every player reports to, and the clock of the caller's time."""

    def __init__(self, run: ScenarioRun, scenario: Scenario, marks: Marks, index: int) -> None:
        self.run, self.scenario, self.marks, self.index = run, scenario, marks, index
        self.next = 0
        self.clock = 0.0
        self.heard: list[str] = []
        self.checked = 0  # position in `heard` the next `hear` searches from
        self.log: list[str] = []
        self.trace: list[tuple[str | None, str | None, str, float]] = []
        self.to_authenticated: float | None = None  # as the service audited it (over HTTP)
        self.to_queue: float | None = None

    # -- the player's side --

    def observe(self, kind: str, line: str) -> None:
        if kind != "request":
            self.log.append(line)
        elif self.to_authenticated is None and self.run.target.authenticated():
            self.to_authenticated = self.clock
        if kind == "say":
            text = line.removeprefix("IVR: ")
            self.heard.append(text)
            self.clock += speech_seconds(text)
        elif kind == "pause":
            self.clock += int(line.split()[-1].rstrip("s"))
            self.run.target.hold()  # the caller holds; the worker works meanwhile
        elif kind == "outcome" and line.startswith("-> enqueued"):
            self.to_queue = self.clock

    def record(self, source: str | None, field: str | None, target: str) -> None:
        self.trace.append((source, field, target, self.clock))

    def __call__(self, gather: Gather, heard_so_far: list[str]) -> Keys | Speech | None:
        self._expectations(None)
        if self.next >= len(self.scenario.steps):
            raise ScenarioFailed(f"the IVR asked for more input than scripted; {self._last()}")
        step = self.scenario.steps[self.next]
        if step.kind in ("answer_callback", "new_call"):
            raise ScenarioFailed(
                f"{self._where()}: `{step.kind}` but the call goes on; {self._last()}"
            )
        self.next += 1
        answer = self._answer(step)
        if answer is None:
            self.clock += gather.timeout
        else:
            spoken = speech_seconds(answer.text) if isinstance(answer, Speech) else 0.0
            self.clock += ANSWER_SECONDS + spoken
        return answer

    # -- the scenario's side --

    def play(self) -> None:
        """Every call of the scenario, then every expectation left."""
        result = self._leg(self.run.target.player(self, self.scenario.caller, None))
        while True:
            self._expectations(result)
            if self.next >= len(self.scenario.steps):
                return
            step = self.scenario.steps[self.next]
            self.next += 1
            if step.answer_callback:
                ring = self.run.target.call_back()
                if ring is None:
                    raise ScenarioFailed(f"{self._where(-1)}: no call back arrived")
                self.log.append(f"(the phone on file {ring.to} rings; the customer answers)")
                result = self._leg(self.run.target.player(self, CALLBACK_NUMBER, ring))
            elif step.new_call:
                self.log.append("(the caller calls again)")
                result = self._leg(self.run.target.player(self, self.scenario.caller, None))
            else:
                raise ScenarioFailed(
                    f"{self._where(-1)}: the call ended ({result.outcome}) before "
                    f"`{step.describe()}`"
                )

    def _leg(self, player: CallPlayer) -> CallResult:
        result = player.play(self)
        if result.outcome == "error":
            raise ScenarioFailed(f"the service failed the call: {result.error}")
        return result

    def _answer(self, step: Step) -> Keys | Speech | None:
        if step.press is not None:
            return Keys(step.press)
        if step.say is not None:
            return Speech(step.say, 0.92 if step.confidence is None else step.confidence)
        if step.code is not None:
            code = self.run.target.latest_code(step.code)
            if code is None:
                raise ScenarioFailed(f"{self._where(-1)}: no {step.code} code has arrived")
            return Keys(code + "#")
        if step.service_code is not None:
            return Keys(self.run.target.service_code(step.service_code) + "#")
        return None  # silence

    def _expectations(self, ended: CallResult | None) -> None:
        """Check the expectations before the next action: `hear` against what was heard so
        far; `queue` and `no_queue` only once a call has ended (`ended`)."""
        steps = self.scenario.steps
        while self.next < len(steps) and not steps[self.next].is_action:
            step = steps[self.next]
            self.next += 1
            if step.hear is not None or step.hear_re is not None:
                self._hear(step)
            elif ended is None:
                raise ScenarioFailed(f"{self._where(-1)}: `{step.describe()}` but the IVR asks on")
            else:
                self._queue(step, ended)

    def _hear(self, step: Step) -> None:
        for i in range(self.checked, len(self.heard)):
            text = self.heard[i]
            if step.hear is not None and step.hear.casefold() in text.casefold():
                self.checked = i
                return
            if step.hear_re is not None and re.search(step.hear_re, text):
                self.checked = i
                return
        raise ScenarioFailed(f"{self._where(-1)}: `{step.describe()}` not heard; {self._last()}")

    def _queue(self, step: Step, result: CallResult) -> None:
        where = self._where(-1)
        verb = result.enqueue
        attributes = (verb.attributes if verb else None) or {}
        reached = (verb.queue or str(attributes.get("intent", ""))) if verb else None
        if step.no_queue:
            if reached:
                raise ScenarioFailed(f"{where}: `no_queue` but the call reached queue {reached!r}")
            return
        if reached != step.queue:
            got = f"queue {reached!r}" if reached else f"no queue ({result.outcome})"
            raise ScenarioFailed(f"{where}: expected queue {step.queue!r}, got {got}")
        if step.assurance is not None and attributes.get("assurance") != step.assurance:
            raise ScenarioFailed(
                f"{where}: expected assurance {step.assurance}, got {attributes.get('assurance')}"
                + ("" if attributes else " (no task attributes: is TaskRouter configured?)")
            )
        for key, want in (step.attributes or {}).items():
            if not _subset(want, attributes.get(key)):
                raise ScenarioFailed(
                    f"{where}: task attribute {key!r} is {attributes.get(key)!r}, expected {want!r}"
                )

    def _where(self, offset: int = 0) -> str:
        j = self.next + offset
        line, col = self.marks.get(("scenarios", self.index, "steps", j), (None, None))
        return f"{self.run.file}:{line}:{col} step {j + 1}"

    def _last(self) -> str:
        return f"it last said: {self.heard[-1]!r}" if self.heard else "nothing was heard"


def _subset(want: Any, got: Any) -> bool:
    """`want` is in `got`: mappings by key, lists item by item in order, the rest equal."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(_subset(v, got.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(want) <= len(got) and all(map(_subset, want, got))
    return bool(want == got)


class ScenarioRun:
    def __init__(self, file: str, target: Any) -> None:
        self.file, self.target = file, target
