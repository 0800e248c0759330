"""The typed model of a flow file: what an admin may write, and nothing else.

Unknown keys are errors (a typo such as `requirs:` must not silently drop a requirement).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ivr.assurance import METHODS, Assurance, Factor, Requirement, factor_of

STEP_ID = r"^[a-z][a-z0-9_]{0,47}$"
StepId = Annotated[str, Field(pattern=STEP_ID)]
# A queue always demands authentication: `none` and `identified` are not requirements.
QueueLevel = Literal["one_factor", "two_factor"]
QUEUE_NAME = r"^[A-Za-z0-9_.:-]+$"
QueueName = Annotated[str, Field(min_length=1, max_length=64, pattern=QUEUE_NAME)]
# Agent roles are free words here; `flows/agents.yaml` says what each may see.
RoleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
InputMode = Literal["dtmf", "speech", "dtmf speech"]
Method = Literal["pin", "passcode", "sms_otp", "email_otp", "callback", "service_code"]
assert set(Method.__args__) == set(METHODS)  # type: ignore[attr-defined]


# Factors the worker delivers: the caller holds (codes) or hangs up (callback) meanwhile.
DELIVERED_METHODS = ("sms_otp", "email_otp", "callback")
CODE_METHODS = ("sms_otp", "email_otp")
MAX_WAIT = 30  # seconds: the longest a caller may be held for a delivery (`max_wait`)
PROMPT_FIELDS = (
    "say", "prompt", "reprompt", "failure_prompt", "hold_prompt", "unavailable_prompt",
    "answer_prompt",
)  # fmt: skip


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatherOptions(Strict):
    """What every step that listens to the caller shares: a prompt and a way out."""

    prompt: str = Field(
        min_length=1, description="What the caller hears; say how to answer (which keys, or words)."
    )
    reprompt: str = Field(
        default="Sorry, I didn't catch that.",
        description="Said before `prompt` again when the caller answered nothing usable.",
    )
    max_tries: int = Field(
        default=3, ge=1, le=10, description="How many times to ask before `on_exhausted`."
    )
    timeout: int = Field(
        default=6, ge=1, le=60, description="Seconds of silence that count as no answer."
    )
    on_exhausted: StepId = Field(
        description="The step after `max_tries` asks without a usable answer."
    )


class SayStep(Strict):
    """Speaks, then moves on."""

    kind: Literal["say"]
    say: str = Field(min_length=1, description="What the caller hears.")
    next: StepId = Field(description="The step after this one.")


class GotoStep(Strict):
    """Jumps to another step, saying nothing."""

    kind: Literal["goto"]
    next: StepId = Field(description="The step to jump to.")


class HangupStep(Strict):
    """Ends the call."""

    kind: Literal["hangup"]
    say: str | None = Field(default=None, description="Said before the call ends.")


class Choice(Strict):
    """One menu option; a caller may press `key` or say one of `words`."""

    key: str | None = Field(
        default=None, pattern=r"^[0-9*#]$", description="One phone key: 0-9, * or #."
    )
    words: list[str] = Field(
        default_factory=list,
        description="Words or phrases a caller may say instead (needs speech in `input`).",
    )
    next: StepId = Field(description="The step this choice leads to.")

    @field_validator("key", mode="before")
    @classmethod
    def _key_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _reachable(self) -> Choice:
        if self.key is None and not self.words:
            raise ValueError("a choice needs a `key`, `words`, or both")
        return self


class MenuStep(GatherOptions):
    """Offers choices by keypad, speech or both."""

    kind: Literal["menu"]
    input: InputMode = Field(
        default="dtmf", description="How the caller answers: keys, speech, or either."
    )
    choices: list[Choice] = Field(min_length=1, description="The options, each with its `next`.")

    @model_validator(mode="after")
    def _distinct(self) -> MenuStep:
        keys = [c.key for c in self.choices if c.key is not None]
        if len(keys) != len(set(keys)):
            raise ValueError("two choices use the same key")
        if "speech" not in self.input and any(c.words for c in self.choices):
            raise ValueError("choices have `words` but `input` does not include speech")
        if self.input == "speech" and any(c.words == [] for c in self.choices):
            raise ValueError("with `input: speech` every choice needs `words`")
        return self


class IdentifyStep(GatherOptions):
    """Claims an account. It proves nothing: that is what `authenticate` is for."""

    kind: Literal["identify"]
    min_digits: int = Field(default=6, ge=4, le=20, description="Shortest account number.")
    max_digits: int = Field(default=12, ge=4, le=20, description="Longest account number.")
    # Unknown and known numbers sound alike, so caller ID leaks nothing.
    caller_id: bool = Field(
        default=False,
        description="Pressing only the finish key claims the account linked to the calling number.",
    )
    next: StepId = Field(description="The step after an account is claimed.")

    @model_validator(mode="after")
    def _range(self) -> IdentifyStep:
        if self.min_digits > self.max_digits:
            raise ValueError("min_digits is larger than max_digits")
        return self


class AuthenticateStep(GatherOptions):
    """Checks one factor. For `callback`, `prompt` is said before the call ends, and
    `answer_prompt` greets the customer on the call back."""

    kind: Literal["authenticate"]
    method: Method = Field(description="The factor this step checks.")
    failure_prompt: str = Field(
        default="That did not match our records.",
        description="Said after a failed attempt; may use `{attempts_left}`.",
    )
    min_confidence: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="For `passcode`: speech recognised below this confidence counts as a failure.",
    )
    next: StepId = Field(description="The step after the factor is proved.")
    on_failure: StepId | None = Field(
        default=None,
        description="Where a failed attempt leads while the call's budget lasts; absent: ask "
        "again.",
    )
    # Factors the worker delivers (codes, callback): holding, and the way out if delivery fails.
    hold_prompt: str = Field(
        default="Please hold while we send your code.",
        description="For delivered factors: said while the worker sends the code or call.",
    )
    unavailable_prompt: str = Field(
        default="Sorry, we could not send that right now.",
        description="For delivered factors: said when sending fails or a send cap is reached.",
    )
    on_unavailable: StepId | None = Field(
        default=None,
        description="For delivered factors (required for them): where to go when sending fails.",
    )
    max_wait: int = Field(
        default=12,
        ge=2,
        le=MAX_WAIT,
        description="For delivered factors: the longest the caller holds, in seconds.",
    )
    answer_prompt: str = Field(
        default="Hello, this is the call back you asked for. To continue, press 1.",
        description="For `callback`: what the customer hears on answering the call back.",
    )

    @model_validator(mode="after")
    def _delivery_can_fail(self) -> AuthenticateStep:
        if self.method in DELIVERED_METHODS and self.on_unavailable is None:
            raise ValueError(
                f"method `{self.method}` needs `on_unavailable:`, the step to go to when "
                "delivery fails or is capped"
            )
        return self


class EnqueueStep(Strict):
    """Hands the caller to a queue declared under `queues:`; the requirement lives there, once,
    so two steps cannot send callers to one queue on different terms."""

    kind: Literal["enqueue"]
    queue: QueueName = Field(description="A queue declared under `queues:`.")
    say: str | None = Field(default=None, description="Said before the caller is queued.")


class Queue(Strict):
    """A queue declared once: what it takes to reach it, by which methods, and who serves it."""

    requires: QueueLevel = Field(description="The authentication a caller needs to enter.")
    methods: tuple[Method, ...] | None = Field(
        default=None,
        description="Only proofs by these methods count for this queue; absent: every method.",
    )
    roles: tuple[RoleName, ...] = Field(
        min_length=1,
        description="The agent roles that serve the queue (agents.yaml says what each sees).",
    )
    unattested_requires: QueueLevel | None = Field(
        default=None,
        description="The requirement when caller ID attestation is absent or failed; it can "
        "only add to `requires`.",
    )

    @model_validator(mode="after")
    def _satisfiable(self) -> Queue:
        if self.methods is not None:
            if not self.methods:
                raise ValueError("`methods` is empty: no caller could ever reach this queue")
            if len(set(self.methods)) != len(self.methods):
                raise ValueError("`methods` names a method twice")
        if len(set(self.roles)) != len(self.roles):
            raise ValueError("`roles` names a role twice")
        req = self.requirement
        if req.unattested is not None and req.unattested < req.level:
            raise ValueError(
                "`unattested_requires` is weaker than `requires`; it can only add to it"
            )
        if req.strictest is Assurance.two_factor:
            have = {factor_of(m) for m in req.methods}
            for factor in Factor:
                if factor not in have:
                    raise ValueError(
                        f"two_factor needs a {factor.value} method, and `methods` has none: "
                        "no caller could reach this queue at two factors"
                    )
        return self

    @property
    def requirement(self) -> Requirement:
        return Requirement(
            Assurance.parse(self.requires),
            frozenset(self.methods if self.methods is not None else METHODS),
            Assurance.parse(self.unattested_requires) if self.unattested_requires else None,
        )


Step = Annotated[
    SayStep | GotoStep | HangupStep | MenuStep | IdentifyStep | AuthenticateStep | EnqueueStep,
    Field(discriminator="kind"),
]
STEP_KINDS = ("say", "goto", "hangup", "menu", "identify", "authenticate", "enqueue")
GATHER_KINDS = ("menu", "identify", "authenticate")


class AuthenticationPolicy(Strict):
    """The per-call budget, shared by every method, and the one way out when it is spent."""

    max_failures: int = Field(
        default=2, ge=1, le=5, description="Failed attempts per call, across every method."
    )
    failure_route: StepId = Field(
        description="The step a caller goes to once `max_failures` is spent."
    )


class Flow(Strict):
    """A call flow: its steps from `start`, the queues they lead to, and the failure budget."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_-]{0,47}$", description="The flow's name (`IVR_FLOW`)."
    )
    start: StepId = Field(description="The step every call begins with.")
    language: str = Field(default="en-US", description="Speech language, e.g. en-US.")
    voice: str | None = Field(default=None, description="A Twilio voice, e.g. Polly.Joanna.")
    authentication: AuthenticationPolicy = Field(
        description="The per-call budget of failed attempts, and where it ends."
    )
    queues: dict[QueueName, Queue] = Field(
        default_factory=dict, description="Agent queues by name, each declared once."
    )
    steps: dict[StepId, Step] = Field(
        min_length=1, description="The steps by name; each has a `kind`."
    )

    def step(self, step_id: str) -> Step:
        return self.steps[step_id]

    def queue_of(self, step: EnqueueStep) -> Queue | None:
        """The declaration the step names; None only in a flow the checker refused."""
        return self.queues.get(step.queue)

    def targets(self, step_id: str) -> list[tuple[str, str]]:
        """Every (field, target step) leaving `step_id`, for the graph checks and the engine."""
        step = self.steps[step_id]
        out: list[tuple[str, str]] = []
        for name in ("next", "on_exhausted", "on_failure", "on_unavailable"):
            target = getattr(step, name, None)
            if target:
                out.append((name, target))
        if isinstance(step, MenuStep):
            out.extend((f"choices[{i}].next", c.next) for i, c in enumerate(step.choices))
        if isinstance(step, AuthenticateStep):
            out.append(("authentication.failure_route", self.authentication.failure_route))
        return out


TEMPLATE_FIELD = re.compile(r"{([^{}]*)}")
