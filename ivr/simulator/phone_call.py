"""A call played from the browser phone (`/dev/phone`): all of its state between two of the
person's answers, and the scenario test it records as it goes.

`PhoneCall` is plain data that round-trips through JSON, so it can travel with the browser
between requests (ivr.web.dev_phone says why, and signs it). The functions here move a call on by
one answer with `SteppedPlayer`, watch the development outbox for the codes and the call back the
worker sends, and write down each thing the caller did in the words of a scenario file
(ivr.flows.scenarios): a code keyed in from a text becomes `code: sms`, so the saved scenario
still passes when the replay texts a different code.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from ivr.errors import IvrError
from ivr.outbox import Outbox, OutboxMessage
from ivr.simulator.phone import CODE_IN_TEXT, answering
from ivr.simulator.player import CallerInput, CallResult, Keys, Speech
from ivr.simulator.stepper import Step, SteppedPlayer, Waiting
from ivr.simulator.transport import Transport

#: Steps one recorded call may hold: more is a stuck key, not a scenario (and would make the
#: state the browser carries outgrow the request bound).
MAX_STEPS = 120
DEFAULT_CONFIDENCE = 0.92  # what a scenario's `say:` means without `confidence:`
HEADLINE_CHARS = 80


class PhoneError(IvrError):
    """What the person asked for does not fit the call as it is (it has ended, no call back
    has arrived, there is nothing to save yet): a message for them, not a failure."""


@dataclass(frozen=True)
class Leg:
    """One call leg as Twilio would place it: the caller's own call or the call back."""

    call_sid: str
    from_number: str
    to_number: str
    voice_path: str = "/voice"
    extra_params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Line:
    """Where the phone's calls go: the service, how to sign for it, and the customer's outbox."""

    transport: Transport
    base_url: str
    auth_token: str
    outbox: Outbox
    callback_from: str = "+15005550001"  # the service's caller ID, as a call back shows it
    pause_scale: float = 1.0  # holds really wait, so the worker can deliver meanwhile

    def player(self, leg: Leg) -> SteppedPlayer:
        return SteppedPlayer(
            self.transport,
            self.base_url,
            self.auth_token,
            call_sid=leg.call_sid,
            from_number=leg.from_number,
            to_number=leg.to_number,
            voice_path=leg.voice_path,
            extra_params=leg.extra_params,
            pause_scale=self.pause_scale,
        )


@dataclass
class PhoneCall:
    caller: str
    stir_verstat: str | None
    leg: Leg
    outbox_from: int  # messages already in the outbox when the call began are not its own
    waiting: Waiting | None = None
    outcome: str | None = None  # None while the call goes on
    queue: str | None = None
    assurance: str | None = None
    caller_hung_up: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)

    # -- as data --

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["waiting"] = self.waiting.to_json() if self.waiting else None
        return data

    @classmethod
    def from_json(cls, data: Any) -> PhoneCall:
        """The call back from its JSON; ValueError for anything else."""
        if not isinstance(data, dict) or set(data) != set(cls.__dataclass_fields__):
            raise ValueError("not a phone call")
        try:
            leg = Leg(**data["leg"])
            waiting = Waiting.from_json(data["waiting"]) if data["waiting"] else None
            call = cls(**(data | {"leg": leg, "waiting": waiting}))
        except TypeError as exc:
            raise ValueError(f"not a phone call: {exc}") from None
        if not isinstance(call.steps, list) or not all(isinstance(s, dict) for s in call.steps):
            raise ValueError("not a phone call")
        return call

    # -- as a scenario --

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    def scenario(self) -> list[dict[str, Any]]:
        """The steps of a scenario that replays this call, ending in what it reached."""
        if not self.ended:
            raise PhoneError("the call is still going on: finish it before saving it")
        if self.outcome == "error":
            raise PhoneError("the service failed this call: there is nothing to replay")
        if self.caller_hung_up and self.outcome != "enqueued":
            raise PhoneError(
                "you hung up while the IVR was asking: a scenario cannot hang up; "
                "play the call to its end (a queue, or the IVR saying goodbye)"
            )
        if self.outcome == "enqueued" and self.queue:
            reached: dict[str, Any] = {"queue": self.queue}
            if self.assurance:
                reached["assurance"] = self.assurance
        else:
            reached = {"no_queue": True}
        return [*self.steps, reached]


def dial(
    line: Line, caller: str, stir_verstat: str | None, to_number: str
) -> tuple[PhoneCall, Step]:
    """Place a new call from `caller`, presenting `stir_verstat` (None: no attestation)."""
    extra = {"StirVerstat": stir_verstat} if stir_verstat else {}
    leg = Leg("CA" + secrets.token_hex(16), caller, to_number, extra_params=extra)
    call = PhoneCall(caller, stir_verstat, leg, outbox_from=len(line.outbox.messages()))
    step = line.player(leg).dial()
    _after(call, step)
    return call, step


def answer(line: Line, call: PhoneCall, given: CallerInput | None) -> Step:
    """The caller answers the question the call waits at (None: silence)."""
    if call.waiting is None:
        raise PhoneError("the call has ended: dial again, or answer the call back")
    if len(call.steps) >= MAX_STEPS:
        raise PhoneError(f"this call has {MAX_STEPS} steps already: hang up and save it")
    call.steps.append(_recorded(line, call, given))
    step = line.player(call.leg).answer(call.waiting, given)
    _after(call, step)
    return step


def ring(line: Line, call: PhoneCall) -> OutboxMessage | None:
    """The call back the worker placed for this call and nobody has answered yet, if any."""
    calls = [m for m in _own(line, call) if m.channel == "call" and m.call_sid]
    if not calls or calls[-1].call_sid == call.leg.call_sid:
        return None
    return calls[-1]


def answer_callback(line: Line, call: PhoneCall) -> Step:
    """The customer's phone on file rings and they answer it, as `ivr call` does."""
    if not call.ended:
        raise PhoneError("the call is still going on: a call back comes after it ends")
    rung = ring(line, call)
    if rung is None or rung.call_sid is None:
        raise PhoneError("no call back has arrived (yet): the worker places it within seconds")
    call.steps.append({"answer_callback": True})
    call.leg = Leg(from_number=line.callback_from, **answering(rung))
    call.outcome = call.queue = call.assurance = None
    call.caller_hung_up = False
    step = line.player(call.leg).dial()
    _after(call, step)
    return step


def hang_up(line: Line, call: PhoneCall) -> CallResult:
    """The caller hangs up, at a question or on hold in a queue."""
    if call.waiting is None and call.outcome != "enqueued":
        raise PhoneError("the call has ended already")
    if call.caller_hung_up:
        raise PhoneError("you have hung up already")
    result = line.player(call.leg).hang_up_now()
    call.caller_hung_up = True
    if call.waiting is not None:
        call.waiting, call.outcome = None, "hung_up"
    return result


def headline(text: str) -> str:
    """The first sentence of a prompt, at most HEADLINE_CHARS: what a recorded `hear:` checks,
    enough to tell the prompts apart without breaking on every edit of their wording."""
    first = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]
    if len(first) > HEADLINE_CHARS:
        first = first[:HEADLINE_CHARS].rsplit(" ", 1)[0]
    return first


def _after(call: PhoneCall, step: Step) -> None:
    result = step.result
    if result.heard:
        call.steps.append({"hear": headline(result.heard[-1])})
    call.waiting = step.waiting
    if step.waiting is None:
        call.outcome = result.outcome
        attributes = (result.enqueue.attributes if result.enqueue else None) or {}
        call.queue = result.queue or (str(attributes["intent"]) if "intent" in attributes else None)
        assurance = attributes.get("assurance")
        call.assurance = str(assurance) if assurance else None


def _recorded(line: Line, call: PhoneCall, given: CallerInput | None) -> dict[str, Any]:
    match given:
        case None:
            return {"silence": True}
        case Keys(digits=digits):
            channel = _codes(line, call).get(digits.removesuffix("#"))
            return {"code": channel} if channel else {"press": digits}
        case Speech(text=text, confidence=confidence):
            spoken: dict[str, Any] = {"say": text}
            if confidence != DEFAULT_CONFIDENCE:
                spoken["confidence"] = confidence
            return spoken
    raise TypeError(f"not a caller's answer: {given!r}")


def _own(line: Line, call: PhoneCall) -> list[OutboxMessage]:
    return line.outbox.messages()[call.outbox_from :]


def _codes(line: Line, call: PhoneCall) -> dict[str, str]:
    """The codes texted or emailed since the call began, and by which channel."""
    found: dict[str, str] = {}
    for message in _own(line, call):
        if message.channel in ("sms", "email"):
            for code in CODE_IN_TEXT.findall(message.body):
                found[code] = message.channel
    return found
