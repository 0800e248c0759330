"""The call flow as a pure function: (flow, call state, caller input) -> what to do next.

No Flask, no Redis: everything that touches the outside world (customer lookup, secret checks,
counters, audit) arrives through `Ports`, so every rule here is testable without a server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Literal, Protocol

from ivr.assurance import Assurance, Requirement, attested, derive
from ivr.auth.speech import normalise_passcode
from ivr.flows import trail
from ivr.flows.prompts import fill
from ivr.flows.schema import (
    CODE_METHODS,
    DELIVERED_METHODS,
    AuthenticateStep,
    EnqueueStep,
    Flow,
    GatherOptions,
    GotoStep,
    HangupStep,
    IdentifyStep,
    MenuStep,
    SayStep,
)

MAX_HOPS = 50  # steps entered without waiting for the caller; the checker forbids silent loops
CALLER_ID_KEY = "*"  # at an identify step: "use the account on the number I am calling from"
MAX_DIGITS_INPUT = 64
_ASCII_DIGITS = re.compile(r"[0-9]+")


@dataclass
class CallState:
    """All a call remembers between webhooks; it lives in Redis, never in a web process.

    `account` is the claim id, never what the caller keyed: the account number when the digits
    matched an account, a keyed digest when they matched none (`Ports.claim`), "" for a
    caller-ID claim that matched nobody. Every proof in `proofs` was made for this claim; every
    claim (the same account again included) drops them all, and voids every pending send and
    code of the one before.
    """

    call_sid: str
    caller: str
    step: str
    seq: int = 0
    tries: int = 0
    account: str | None = None
    proofs: list[str] = field(default_factory=list)
    failures: int = 0
    ended: bool = False
    holding: bool = False  # waiting for the worker to deliver a code
    waited: int = 0  # seconds held so far for the current delivery
    # On a call back: the account whose number on file the worker called. The callback proof
    # holds for that account only, whatever the caller claims later in the call.
    called_back: str | None = None
    # The opaque reference agents and TaskRouter know the call by (`secrets.token_urlsafe(12)`
    # at call start): never the account, the phone number or the name.
    ref: str = ""
    proven_at: dict[str, float] = field(default_factory=dict)  # method -> epoch s of the proof
    # Risk signals (ivr.auth.signals): they route and inform, they never prove anything.
    signals: dict[str, str] = field(default_factory=dict)
    queue: str | None = None  # the queue the call was handed to
    # The content hash of the flow version the call started on; it keeps it until it ends.
    flow_version: str = ""

    @property
    def assurance(self) -> Assurance:
        return derive(self.account is not None, self.proofs)

    def to_json(self) -> str:
        # Every field is JSON already (no nested dataclass): what asdict would copy, 6x faster.
        return json.dumps(vars(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> CallState:
        """Fields a newer or older release wrote, and this one does not know, are dropped, so a
        call in progress survives a rolling deploy."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


class FactorUnavailable(Exception):
    """The factor's provider could not check the answer (e.g. Twilio Verify is down).

    Not a failed attempt: the caller is offered another method, and nothing is counted.
    """


class AuthenticationRefused(Exception):
    """The calling number is over an abuse limit (`ivr.auth.abuse`) and in its cool-down.

    Nothing was checked or counted; authentication is over for the call, which leaves by the
    flow's failure route exactly as if its budget were spent, never to an agent.
    """


@dataclass(frozen=True)
class CallerInput:
    digits: str | None = None
    speech: str | None = None
    confidence: float | None = None
    # When the answer arrived (epoch s): it stamps the proof it makes, so the engine itself
    # never reads a clock.
    at: float | None = None

    @property
    def empty(self) -> bool:
        return not self.digits and not (self.speech or "").strip()


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class Ask:
    """Listen to the caller; rendered as a Gather whose action carries the call's sequence."""

    step: str
    input: str
    prompt: str
    finish_on_key: str | None = "#"
    num_digits: int | None = None
    timeout: int = 6
    speech: bool = False
    hints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hold:
    """Keep the caller on the line for `seconds`, then ask whether the code has gone out."""

    step: str
    seconds: int


@dataclass(frozen=True)
class Enqueue:
    """Hand the caller to `queue`; `attributes` travel with them (`task_attributes`)."""

    step: str
    queue: str
    attributes: Mapping[str, object] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Hangup:
    pass


Action = Say | Ask | Hold | Enqueue | Hangup
Trace = Callable[[str | None, str | None, str], None]
"""Called as `(from_step, field, to_step)` each time the engine enters a step; from and field
are None where no edge of the flow leads in (the start, a call back, a step-up door)."""
Delivery = Literal["queued", "unavailable"]
DeliveryStatus = Literal["pending", "sent", "failed"]
FAILURE_ROUTE = "authentication.failure_route"  # the field name `Flow.targets` gives the edge
FIRST_POLL_SECONDS = 1
POLL_SECONDS = 2
RESEND_KEY = "*"
CALLBACK_CONFIRM = "1"


class Ports(Protocol):
    """What the engine may ask of the world."""

    def account_for_caller(self, caller: str) -> str | None:
        """The one account whose phone on file is `caller`, or None (none, or ambiguous)."""

    def claim(self, digits: str) -> str:
        """The claim id for account digits the caller keyed: the account number when an
        account has it, else a keyed digest, so digits that match nobody (a PIN keyed at the
        wrong prompt, say) are never stored. It must not take longer either way."""

    def drop_claim(self, state: CallState) -> None:
        """The call claims an account again (another, or the same): void every send still
        pending and every code issued for the claim `state.account`."""

    def verify(self, state: CallState, method: str, answer: str | None) -> bool:
        """Check `answer` for `method` against the claimed account, counting and auditing it.

        `answer` None is an unusable attempt (garbled, low confidence): a failure all the same.
        Unknown accounts and locked factors simply return False. Raises AuthenticationRefused
        when the calling number is refused for abuse.
        """

    def request_code(self, state: CallState, method: str, max_wait: int) -> Delivery:
        """Ask the worker to make and send a one-time code, for the claimed account, to the
        destination on file; the caller holds for it at most `max_wait` seconds, and a send
        that has not gone out by then never does."""

    def delivery_status(self, state: CallState, method: str) -> DeliveryStatus:
        """How the latest request_code for this call and method went."""

    def abandon_delivery(self, state: CallState, method: str) -> None:
        """The caller is told `method` could not be delivered: the send must never arrive
        with a code that works, whether it is still pending or went out after all."""

    def request_callback(self, state: CallState, step: str) -> Delivery:
        """Ask the worker to call the number on file; the call back is answered at `step`."""

    def note(self, state: CallState, event: str, **fields: str) -> None:
        """Put an event of the call on its audit trail (see `ivr.flows.trail` for which).

        `fields` never hold what the caller keyed or said: only names (method, queue, step)
        and levels."""


class Engine:
    def __init__(self, flow: Flow, ports: Ports, trace: Trace | None = None) -> None:
        self.flow = flow
        self.ports = ports
        # Observes the walk (`ivr flows test` measures coverage with it); never steers it.
        self.trace = trace
        self._doors = _step_up_doors(flow)

    def start(self, state: CallState) -> list[Action]:
        self._edge(None, None, self.flow.start)
        return self._enter(state, self.flow.start, [])

    def repeat(self, state: CallState) -> list[Action]:
        """Say the current question again, e.g. for a stale or replayed request."""
        if state.ended:
            return [Hangup()]
        return self._enter(state, state.step, [], fresh=False)

    def answer(self, state: CallState, given: CallerInput) -> list[Action]:
        if state.ended:
            return [Hangup()]
        step = self.flow.steps.get(state.step)
        if not isinstance(step, GatherOptions):
            return self.repeat(state)
        if isinstance(step, MenuStep):
            return self._menu(state, step, given)
        if isinstance(step, IdentifyStep):
            return self._identify(state, step, given)
        assert isinstance(step, AuthenticateStep)
        return self._authenticate(state, step, given)

    def answer_callback(self, state: CallState) -> list[Action]:
        """The customer picked up the call back: greet them at the callback step."""
        self._edge(None, None, state.step)
        return self._enter(state, state.step, [])

    def poll(self, state: CallState) -> list[Action]:
        """The caller has held for a while: ask the code, hold on, or offer another way."""
        step = self.flow.steps.get(state.step)
        if state.ended or not state.holding or not isinstance(step, AuthenticateStep):
            return self.repeat(state)
        status = self.ports.delivery_status(state, step.method)
        if status == "sent":
            state.holding, state.tries = False, 0
            return [self._ask(state, state.step, step)]
        if status == "failed" or state.waited >= step.max_wait:
            return self._unavailable(state, step)  # gives the send up: see `_unavailable`
        return [self._hold(state, step)]

    def _menu(self, state: CallState, step: MenuStep, given: CallerInput) -> list[Action]:
        spoken = _words(given.speech or "")
        for i, choice in enumerate(step.choices):
            pressed = given.digits and choice.key is not None and given.digits[:1] == choice.key
            if pressed or (spoken and any(_has_phrase(spoken, w) for w in choice.words)):
                return self._go(state, f"choices[{i}].next", choice.next, [])
        return self._retry(state, step)

    def _identify(self, state: CallState, step: IdentifyStep, given: CallerInput) -> list[Action]:
        digits = (given.digits or "")[: MAX_DIGITS_INPUT + 1]
        if step.caller_id and digits == CALLER_ID_KEY:
            # An unknown number still "claims" an account that does not exist, so the caller
            # hears exactly what a known one hears; authentication then fails as for a bad PIN.
            claimed = self.ports.account_for_caller(state.caller) or ""
        elif _ASCII_DIGITS.fullmatch(digits) and step.min_digits <= len(digits) <= step.max_digits:
            claimed = self.ports.claim(digits)
        else:
            return self._retry(state, step)
        # Every claim starts with nothing proved, the same account claimed again included, as
        # the flow checker reasons (SECURITY 28); the old claim's sends and codes go with its
        # proofs. The failures stay: the per-call budget is the caller's, whatever they claim.
        if state.account is not None:
            self.ports.drop_claim(state)
        state.proofs, state.holding, state.waited = [], False, 0
        state.proven_at = {}
        state.account = claimed
        self._note(state, trail.identified(digits == CALLER_ID_KEY))
        return self._go(state, "next", step.next, [])

    def _authenticate(
        self, state: CallState, step: AuthenticateStep, given: CallerInput
    ) -> list[Action]:
        if state.holding:
            return [self._hold(state, step)]  # a request from before the hold began
        if given.empty:
            return self._retry(state, step)
        if step.method in CODE_METHODS and given.digits == RESEND_KEY:
            # A new code; the failures so far still count (NIST 800-63B rev 4, 3.1.3).
            return self._enter(state, state.step, [])
        if step.method == "callback" and given.digits != CALLBACK_CONFIRM:
            return self._retry(state, step)  # a stray key on the call back is not an attempt
        try:
            ok = self.ports.verify(state, step.method, _answer(step, given))
        except FactorUnavailable:
            if step.on_unavailable is None:
                raise
            return self._unavailable(state, step)
        except AuthenticationRefused:
            state.failures = max(state.failures, self.flow.authentication.max_failures)
            return self._go(state, FAILURE_ROUTE, self.flow.authentication.failure_route, [])
        if ok:
            if step.method not in state.proofs:
                state.proofs.append(step.method)
            if given.at is not None:
                state.proven_at[step.method] = given.at
            return self._go(state, "next", step.next, [])
        state.failures += 1
        if state.failures >= self.flow.authentication.max_failures:
            return self._go(state, FAILURE_ROUTE, self.flow.authentication.failure_route, [])
        said = [Say(self._text(state, step.failure_prompt))]
        if step.on_failure:
            return self._go(state, "on_failure", step.on_failure, said)
        return self._enter(state, state.step, said, fresh=False)

    def _unavailable(self, state: CallState, step: AuthenticateStep) -> list[Action]:
        """The caller hears the send failed, so it has: whatever this call still had coming by
        `step.method` (a late text, a code Twilio Verify could not check) is void from now."""
        if step.method in DELIVERED_METHODS:
            self.ports.abandon_delivery(state, step.method)
        state.holding = False
        assert step.on_unavailable is not None  # the schema demands it for delivered methods
        return self._go(
            state,
            "on_unavailable",
            step.on_unavailable,
            [Say(self._text(state, step.unavailable_prompt))],
        )

    def _retry(self, state: CallState, step: GatherOptions) -> list[Action]:
        state.tries += 1
        if state.tries >= step.max_tries:
            return self._go(state, "on_exhausted", step.on_exhausted, [])
        return self._enter(state, state.step, [Say(self._text(state, step.reprompt))], fresh=False)

    def _enter(
        self, state: CallState, step_id: str, said: list[Action], *, fresh: bool = True
    ) -> list[Action]:
        """Walk from `step_id` until the caller must answer or the call ends.

        `fresh` is False when the same question is asked again (a retry or a replayed request):
        then nothing is sent again and the tries so far stand.
        """
        actions = list(said)
        for _ in range(MAX_HOPS):
            step = self.flow.steps[step_id]
            if isinstance(step, SayStep):
                actions.append(Say(self._text(state, step.say)))
                step_id = self._edge(step_id, "next", step.next)
            elif isinstance(step, GotoStep):
                step_id = self._edge(step_id, "next", step.next)
            elif isinstance(step, AuthenticateStep) and step.method in state.proofs:
                # proved for this claim already: never asked, never counted
                step_id = self._edge(step_id, "next", step.next)
            elif (door := self._doors.get(step_id)) and self._may_enter(state, door[1]):
                step_id = self._edge(None, None, door[0])  # a step-up the caller already has
            elif isinstance(step, HangupStep):
                if step.say:
                    actions.append(Say(self._text(state, step.say)))
                return self._end(state, step_id, actions)
            elif isinstance(step, EnqueueStep):
                if not self._may_enter(state, step):
                    self._note(state, trail.door_shut(state.assurance, step.queue))
                    # The door stays shut whatever the flow says; the checker should have caught it.
                    step_id = self._edge(
                        step_id, FAILURE_ROUTE, self.flow.authentication.failure_route
                    )
                    if isinstance(self.flow.steps[step_id], EnqueueStep):
                        return self._end(state, step_id, actions)
                    continue
                if step.say:
                    actions.append(Say(self._text(state, step.say)))
                queue = self.flow.queue_of(step)
                assert queue is not None  # _may_enter refuses an undeclared queue
                attributes = task_attributes(state, step.queue, queue.requirement)
                level = Assurance[str(attributes["assurance"])]
                self._note(state, trail.enqueued(level, state.proofs, step.queue))
                actions.append(Enqueue(step_id, step.queue, attributes))
                state.step, state.ended, state.queue = step_id, True, step.queue
                return actions
            else:
                assert isinstance(step, GatherOptions)
                fresh = fresh or step_id != state.step
                if fresh:
                    state.tries = 0
                state.step = step_id
                if fresh and isinstance(step, AuthenticateStep):
                    self._note(state, trail.offered(state.assurance, step_id, step.method))
                if isinstance(step, AuthenticateStep) and step.method in DELIVERED_METHODS:
                    return actions + self._deliver(state, step, fresh)
                actions.append(self._ask(state, step_id, step))
                return actions
        return self._end(state, step_id, actions)

    def _go(self, state: CallState, field: str, target: str, said: list[Action]) -> list[Action]:
        """Leave the current step by its `field` edge."""
        return self._enter(state, self._edge(state.step, field, target), said)

    def _edge(self, source: str | None, field: str | None, target: str) -> str:
        if self.trace is not None:
            self.trace(source, field, target)
        return target

    def _deliver(self, state: CallState, step: AuthenticateStep, fresh: bool) -> list[Action]:
        if not fresh:
            if state.holding:
                return [self._hold(state, step)]
            return [self._ask(state, state.step, step)]
        if step.method == "callback" and state.called_back and state.called_back == state.account:
            return [self._ask(state, state.step, step)]
        if step.method == "callback":
            if self.ports.request_callback(state, state.step) == "unavailable":
                return self._unavailable(state, step)
            return self._end(state, state.step, [Say(self._text(state, step.prompt))])
        if self.ports.request_code(state, step.method, step.max_wait) == "unavailable":
            return self._unavailable(state, step)
        state.holding, state.waited = True, 0
        return [Say(self._text(state, step.hold_prompt)), self._hold(state, step)]

    def _hold(self, state: CallState, step: AuthenticateStep) -> Hold:
        """A short first pause (most codes go out well within a second), then steady polls,
        never past `max_wait` in all."""
        seconds = FIRST_POLL_SECONDS if state.waited == 0 else POLL_SECONDS
        seconds = max(1, min(seconds, step.max_wait - state.waited))
        state.waited += seconds
        return Hold(state.step, seconds)

    def _may_enter(self, state: CallState, step: EnqueueStep) -> bool:
        spent = state.failures >= self.flow.authentication.max_failures
        queue = self.flow.queue_of(step)
        if spent or queue is None:
            return False
        return queue.requirement.met(
            state.account is not None, state.proofs, attested(state.signals)
        )

    def _note(self, state: CallState, notes: list[trail.Note]) -> None:
        for event, detail in notes:
            self.ports.note(state, event, **detail)

    def _end(self, state: CallState, step_id: str, actions: list[Action]) -> list[Action]:
        state.step, state.ended = step_id, True
        actions.append(Hangup())
        return actions

    def _ask(self, state: CallState, step_id: str, step: GatherOptions) -> Ask:
        return ask(self.flow, step_id, step, state.failures)

    def _text(self, state: CallState, template: str) -> str:
        return _fill(self.flow, template, state.failures)


def ask(flow: Flow, step_id: str, step: GatherOptions, failures: int = 0) -> Ask:
    """The question the engine asks at a listening step, to a caller with `failures` failed
    attempts in the call: the one `ivr flows check` holds to Twilio's limits."""
    prompt = _fill(flow, step.prompt, failures)
    if isinstance(step, MenuStep):
        hints = tuple(w for c in step.choices for w in c.words)
        return Ask(
            step_id, step.input, prompt, None, 1, step.timeout, "speech" in step.input, hints
        )
    if isinstance(step, AuthenticateStep) and step.method == "passcode":
        return Ask(step_id, "speech", prompt, None, None, step.timeout, True)
    if isinstance(step, AuthenticateStep) and step.method == "callback":
        answer = _fill(flow, step.answer_prompt, failures)
        return Ask(step_id, "dtmf", answer, None, 1, step.timeout)
    return Ask(step_id, "dtmf", prompt, "#", None, step.timeout)


def _fill(flow: Flow, template: str, failures: int) -> str:
    left = max(flow.authentication.max_failures - failures, 0)
    return fill(template, {"attempts_left": left})


def _step_up_doors(flow: Flow) -> dict[str, tuple[str, EnqueueStep]]:
    """Menus whose every choice leads, through say, goto and authenticate steps only, to one
    queue: a caller who already qualifies for it goes straight on, never offered a factor it
    does not need."""
    doors: dict[str, tuple[str, EnqueueStep]] = {}
    for step_id, step in flow.steps.items():
        if not isinstance(step, MenuStep):
            continue
        ends = [_onward_queue(flow, c.next) for c in step.choices]
        first = ends[0]
        if first is not None and all(e is not None and e[1].queue == first[1].queue for e in ends):
            doors[step_id] = first
    return doors


def _onward_queue(flow: Flow, step_id: str) -> tuple[str, EnqueueStep] | None:
    for _ in range(MAX_HOPS):
        step = flow.steps.get(step_id)
        if isinstance(step, EnqueueStep):
            return step_id, step
        if not isinstance(step, SayStep | GotoStep | AuthenticateStep):
            return None
        step_id = step.next
    return None


TASK_KEYS = ("call_ref", "intent", "assurance", "methods", "signals")


def task_attributes(state: CallState, queue: str, requirement: Requirement) -> dict[str, object]:
    """What travels with the caller to the queue (TaskRouter task attributes): the opaque call
    reference, the intent, how much was proven, by what and when, and the risk signals.

    Nothing else, ever: no account, phone number or name, because whatever is here a contact
    center shows every agent who sees the task. Below one factor the level reads "none" and
    no method is listed, so not even the claim of an account travels.
    """
    counted = [m for m in state.proofs if m in requirement.methods]
    level = requirement.level_of(state.account is not None, counted)
    proven = level >= Assurance.one_factor
    return {
        "call_ref": state.ref,
        "intent": queue,
        "assurance": level.name if proven else Assurance.none.name,
        "methods": [
            {"method": method, "at": iso_utc(state.proven_at.get(method))}
            for method in (counted if proven else [])
        ],
        "signals": dict(sorted(state.signals.items())),
    }


def iso_utc(epoch: float | None) -> str | None:
    """ISO 8601 in UTC to the second, as `2026-12-01T21:00:00Z`; None for an unknown time."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _answer(step: AuthenticateStep, given: CallerInput) -> str | None:
    """The secret as the verifier compares it, or None for an attempt that cannot match."""
    if step.method == "passcode":
        if given.confidence is None or given.confidence < step.min_confidence:
            return None
        return normalise_passcode(given.speech or "") or None
    digits = given.digits or ""
    return digits if _ASCII_DIGITS.fullmatch(digits) and len(digits) <= MAX_DIGITS_INPUT else None


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def _has_phrase(spoken: str, phrase: str) -> bool:
    return f" {_words(phrase)} " in f" {spoken} "
