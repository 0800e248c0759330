"""One exception tree, so the CLI and the webhooks can tell our failures from bugs."""

from __future__ import annotations

from dataclasses import dataclass, field


class IvrError(Exception):
    """Base of every error this package raises on purpose."""


class SettingsError(IvrError):
    """Settings are missing or malformed: every problem found, one line each, each starting
    with its variable's name, so one start-up shows everything there is to fix."""

    def __init__(self, *problems: str) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class Problem:
    """One thing wrong with a flow file, located so an admin can jump straight to it."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    hint: str = ""
    severity: str = "error"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        label = "" if self.severity == "error" else f"{self.severity}: "
        text = f"{where}: {label}{self.path + ': ' if self.path else ''}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


@dataclass
class FlowDefinitionError(IvrError):
    """A flow file cannot be used; every problem found is listed, not just the first."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    @property
    def first(self) -> Problem:
        return self.problems[0]


class CustomerError(IvrError):
    """A customer record cannot be created or changed as asked (e.g. a weak PIN)."""


class WeakSecretError(CustomerError):
    """The PIN or passcode chosen is too easy to guess."""


class AssuranceError(IvrError):
    """The engine was asked to open the door for a caller who has not proved enough."""


class AgentError(IvrError):
    """An agent cannot be added, rotated or removed as asked."""


@dataclass
class AgentPolicyError(IvrError):
    """The agent policy file cannot be used; every problem found is listed, located."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
