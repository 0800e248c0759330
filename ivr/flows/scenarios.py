"""Scenario files (`flows/tests/*.yaml`): scripted callers and what they must hear and reach.

Read with the flow loader's composer, under the same bounds and refusals, so every mistake is
reported at its file:line:column; unknown keys are errors, as in a flow (a typo such as
`hera:` must not silently drop an expectation).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ivr.errors import FlowDefinitionError, Problem
from ivr.flows.loader import Marks, compose_file, dotted
from ivr.flows.schema import QueueName

ACTIONS = ("press", "say", "silence", "code", "answer_callback", "service_code", "new_call")
EXPECTATIONS = ("hear", "hear_re", "queue", "no_queue")
_START_HINT = "start with `flow: default` and `scenarios:`"
PHONE = r"^\+[1-9][0-9]{6,14}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Customer(Strict):
    """A customer the scenarios of a file call as, enrolled as `ivr dev` enrols its own."""

    account: str = Field(pattern=r"^[0-9]{6,12}$")
    phone: str = Field(pattern=PHONE)
    pin: str = Field(pattern=r"^[0-9]{4,12}$")
    passcode: str = Field(min_length=1)
    email: str = "customer@example.com"
    name: str = "Test Customer"
    address: str = "1 Example Street"

    @field_validator("account", "pin", "phone", mode="before")
    @classmethod
    def _digits_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


class Step(Strict):
    """One thing the caller does, or one thing they must have heard or reached."""

    press: str | None = Field(default=None, pattern=r"^[0-9*#]+$")
    say: str | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    silence: Literal[True] | None = None
    code: Literal["sms", "email"] | None = None
    answer_callback: Literal[True] | None = None
    service_code: str | None = Field(default=None, pattern=r"^[0-9]{6,12}$")
    new_call: Literal[True] | None = None
    hear: str | None = Field(default=None, min_length=1)
    hear_re: str | None = Field(default=None, min_length=1)
    queue: QueueName | None = None
    assurance: Literal["none", "identified", "one_factor", "two_factor"] | None = None
    attributes: dict[str, Any] | None = None
    no_queue: Literal[True] | None = None

    @field_validator("press", "service_code", mode="before")
    @classmethod
    def _keys_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("hear_re")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_thing(self) -> Step:
        given = [k for k in (*ACTIONS, *EXPECTATIONS) if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a step does one thing ({', '.join(given) or 'nothing given'}): write one of "
                + ", ".join((*ACTIONS, *EXPECTATIONS))
            )
        if self.confidence is not None and self.say is None:
            raise ValueError("`confidence` goes with `say:`")
        if (self.assurance is not None or self.attributes is not None) and self.queue is None:
            raise ValueError("`assurance` and `attributes` go with `queue:`")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in (*ACTIONS, *EXPECTATIONS) if getattr(self, k) is not None)

    @property
    def is_action(self) -> bool:
        return self.kind in ACTIONS

    def describe(self) -> str:
        value = getattr(self, self.kind)
        return self.kind if value is True else f"{self.kind}: {value}"


class Scenario(Strict):
    name: str = Field(min_length=1, max_length=120)
    caller: str = Field(default="+15005550006", alias="from", pattern=PHONE)
    stir_verstat: str | None = None
    steps: list[Step] = Field(min_length=1)

    @field_validator("caller", mode="before")
    @classmethod
    def _number_as_text(cls, value: object) -> object:
        return f"+{value}" if isinstance(value, int) else value


class ScenarioFile(Strict):
    flow: str = Field(default="default", pattern=r"^[a-z][a-z0-9_-]{0,47}$")
    customers: list[Customer] = Field(default_factory=list)
    scenarios: list[Scenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> ScenarioFile:
        names = [s.name for s in self.scenarios]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two scenarios are named {twice[0]!r}; names must differ")
        return self


def load_scenarios(path: str | Path) -> tuple[ScenarioFile, Marks]:
    """The scenarios of one file and where each value was written, or FlowDefinitionError
    listing every problem at its file:line:column."""
    filename = str(path)
    data, marks = compose_file(path, _START_HINT)
    if not isinstance(data, dict):
        line, col = marks.get((), (1, 1))
        problem = Problem(filename, line, col, "", "a scenario file is a mapping", _START_HINT)
        raise FlowDefinitionError([problem])
    try:
        return ScenarioFile.model_validate(data), marks
    except ValidationError as exc:
        raise FlowDefinitionError(_problems(exc, marks, filename)) from None


def _problems(exc: ValidationError, marks: Marks, filename: str) -> list[Problem]:
    problems = []
    for err in exc.errors():
        path = tuple(err["loc"])
        located = path
        while located and located not in marks:
            located = located[:-1]
        line, col = marks.get(located, (None, None))
        problems.append(Problem(filename, line, col, dotted(path), *_explain(err, path)))
    return problems


def _fields_at(path: tuple[str | int, ...]) -> list[str]:
    """The keys allowed in the mapping at `path`, for a `did you mean` hint."""
    names = [p for p in path if isinstance(p, str)]
    model: type[Strict] = ScenarioFile
    for name in names:
        model = {"customers": Customer, "scenarios": Scenario, "steps": Step}.get(name, model)
    return [f.alias or n for n, f in model.model_fields.items()]


def _explain(err: Any, path: tuple[str | int, ...]) -> tuple[str, str]:
    kind, name = err["type"], path[-1] if path else ""
    if kind == "extra_forbidden":
        allowed = _fields_at(path[:-1])
        close = difflib.get_close_matches(str(name), allowed, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"allowed: {', '.join(allowed)}"
        return f"unknown key `{name}`", hint
    if kind == "missing":
        return f"missing required key `{name}`", f"add `{name}: ...`"
    if kind == "literal_error":
        return f"`{err.get('input')}` is not allowed here", f"write {err['ctx']['expected']}"
    message = str(err["msg"]).removeprefix("Value error, ")
    return message, ""
