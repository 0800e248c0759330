"""Play a whole phone call against the IVR the way Twilio would, request by request.

Twilio is the only client the webhooks ever have, so the most faithful test of the IVR is to be
Twilio: send its parameters, sign every request with the account's Auth Token, follow the TwiML
verbs with Twilio's semantics (a silent <Gather> falls through to the next verb, relative URLs
resolve against the current document, an answer that is not TwiML ends the call) and finally
post the status callback. `CallPlayer` does that and returns a `CallResult` a test or the
`ivr call` command can inspect.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Literal, NoReturn, Protocol
from urllib.parse import urldefrag, urlencode, urljoin

from twilio.request_validator import RequestValidator

from ivr.errors import IvrError
from ivr.simulator.transport import Reply, Transport, TransportError
from ivr.simulator.twiml import (
    Dial,
    Enqueue,
    Gather,
    Hangup,
    Pause,
    Play,
    Redirect,
    Reject,
    Say,
    TwimlError,
    Unknown,
    Verb,
    parse_twiml,
)

__all__ = [
    "FAKE_ACCOUNT_SID",
    "CallPlayer",
    "CallResult",
    "CallerInput",
    "Event",
    "InputSource",
    "Keys",
    "Observer",
    "Outcome",
    "ScriptExhaustedError",
    "Scripted",
    "Speech",
    "scripted",
]

FAKE_ACCOUNT_SID = "AC" + "5e" * 16
"""A well-formed AccountSid that belongs to nobody: simulated calls must never look real."""

SIGNATURE_HEADER = "X-Twilio-Signature"
USER_AGENT = "TwilioProxy/1.1 (secure-ivr simulator)"
_DTMF_KEYS = frozenset("0123456789#*")

Outcome = Literal["enqueued", "hung_up", "dialed", "error"]
Observer = Callable[[str, str], None]
"""Called as `(event_kind, line)` while the call runs; kinds are listed on `CallResult.log`."""


class ScriptExhaustedError(IvrError):
    """The IVR asked the caller for more input than the test scripted.

    Raised out of `CallPlayer.play` on purpose: a flow that asks one question too many is
    exactly what a scripted test exists to catch.
    """


@dataclass(frozen=True)
class Keys:
    """Keypresses, exactly as typed: "1234#" ends on the finish key, the player adds nothing."""

    digits: str

    def __post_init__(self) -> None:
        bad = set(self.digits) - _DTMF_KEYS
        if not self.digits or bad:
            raise ValueError(f"Keys({self.digits!r}): use one or more of 0-9 * #")


@dataclass(frozen=True)
class Speech:
    """An utterance as Twilio's recogniser would report it."""

    text: str
    confidence: float = 0.92

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"Speech confidence {self.confidence} is outside 0.0-1.0")


CallerInput = Keys | Speech


class InputSource(Protocol):
    """Decides what the caller does at each <Gather>; None means silence (Gather times out)."""

    def __call__(self, gather: Gather, heard_so_far: list[str]) -> CallerInput | None: ...


class Scripted:
    """Answers gathers from a fixed list, in order; see `scripted`."""

    def __init__(self, inputs: Iterable[CallerInput | None]) -> None:
        self._inputs: list[CallerInput | None] = list(inputs)
        for item in self._inputs:
            if item is not None and not isinstance(item, Keys | Speech):
                raise TypeError(f"scripted() takes Keys, Speech or None, not {item!r}")
        self._next = 0

    @property
    def remaining(self) -> list[CallerInput | None]:
        """Inputs not yet used: a test can assert the IVR asked for everything it expected."""
        return self._inputs[self._next :]

    def __call__(self, gather: Gather, heard_so_far: list[str]) -> CallerInput | None:
        if self._next >= len(self._inputs):
            last = heard_so_far[-1] if heard_so_far else "(nothing)"
            raise ScriptExhaustedError(
                f"the IVR asked for input #{self._next + 1} but only {len(self._inputs)} "
                f"scripted; it last said: {last!r}"
            )
        item = self._inputs[self._next]
        self._next += 1
        return item


def scripted(*inputs: CallerInput | None) -> Scripted:
    """An InputSource that answers each <Gather> with the next item (None = stay silent)."""
    return Scripted(inputs)


@dataclass(frozen=True)
class Event:
    """One webhook request and its answer.

    `url` is the URL requested and signed. For POST the Twilio parameters travel only in the
    form body (`params`), never in `url`, so a test can check that no secret appears in URLs;
    for GET, Twilio appends them to the query string and `url` shows that honestly.
    `kind` says why it was sent: "voice" (call start), "gather", "redirect" or "status".
    """

    kind: str
    method: str
    url: str
    params: dict[str, str]
    status: int
    body: str
    content_type: str = ""


@dataclass
class CallResult:
    """Everything observable about one simulated call."""

    call_sid: str
    heard: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    outcome: Outcome = "hung_up"
    queue: str | None = None
    dialed: str | None = None
    responses: list[str] = field(default_factory=list)
    error: str | None = None
    """Why the call ended in "error" (HTTP status, parse problem, loop guard)."""
    error_status: int | None = None
    """HTTP status of the answer that ended the call in "error" (0: no answer at all)."""
    enqueue: Enqueue | None = None
    """The <Enqueue> verb itself, to inspect its <Task> attributes or waitUrl."""
    log: list[tuple[str, str]] = field(default_factory=list)
    """(kind, line) in call order. Kinds: say, play, pause, keys, speech, silence, ignored,
    request, skip, outcome -- the same pairs the observer received."""

    def said(self, substring: str) -> bool:
        """Whether any <Say> contained `substring` (case-insensitive, so "pin" finds "PIN")."""
        needle = substring.casefold()
        return any(needle in text.casefold() for text in self.heard)

    def transcript(self, *, requests: bool = False) -> str:
        """The call as a person would describe it; `requests=True` adds one line per webhook."""
        return "\n".join(line for kind, line in self.log if requests or kind != "request")

    @property
    def status_callback(self) -> Event | None:
        """The final status callback request, if one was sent."""
        return next((e for e in reversed(self.events) if e.kind == "status"), None)


@dataclass(frozen=True)
class _Next:
    """Where the current document sends the call next."""

    kind: str
    method: str
    url: str
    params: dict[str, str]


class _Ended(Exception):  # control flow only, never leaves this module
    """Raised inside the verb loop when a verb ends the call."""


class CallPlayer:
    """Plays calls as Twilio would, against any `Transport`.

    One player describes one caller and one call: the CallSid is fixed at construction (a fresh
    random one unless given), so playing twice replays the same call leg as far as the IVR
    can tell. Create another player for an independent call.
    """

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        auth_token: str,
        *,
        from_number: str = "+15005550006",
        to_number: str = "+15005550001",
        call_sid: str | None = None,
        account_sid: str = FAKE_ACCOUNT_SID,
        voice_path: str = "/voice",
        status_path: str = "/voice/status",
        extra_params: dict[str, str] | None = None,
        max_requests: int = 100,
        send_status: bool = True,
        observer: Observer | None = None,
        pause_scale: float = 1.0,
    ) -> None:
        """`base_url` is the public URL Twilio is configured with (scheme, host, any prefix);
        `voice_path` and `status_path` are appended to it unless they are absolute URLs.
        `<Pause>` really waits, times `pause_scale` (0 for tests with nothing to wait for): a
        caller on hold gives the worker time to deliver a code."""
        if max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        self.transport = transport
        self.base_url = base_url
        self.from_number = from_number
        self.to_number = to_number
        self.call_sid = call_sid or "CA" + secrets.token_hex(16)
        self.account_sid = account_sid
        self.voice_url = _join(base_url, voice_path)
        self.status_url = _join(base_url, status_path)
        self.extra_params = dict(extra_params or {})
        self.max_requests = max_requests
        self.send_status = send_status
        self._started = time.monotonic()
        self.observer = observer
        self.pause_scale = pause_scale
        self._validator = RequestValidator(auth_token)

    # -- public -------------------------------------------------------------------------------

    def play(self, inputs: InputSource) -> CallResult:
        """Run the call from the first webhook to the status callback and report what happened.

        Never raises for IVR misbehaviour (HTTP errors, bad TwiML, loops): those end the call
        with outcome "error" so tests can assert on them. Errors of the *script* (such as
        `ScriptExhaustedError`) do propagate.
        """
        result = CallResult(call_sid=self.call_sid)
        self._started = time.monotonic()
        step: _Next | None = _Next("voice", "POST", self.voice_url, {})
        first = True
        sent = 0
        while step is not None:
            if sent >= self.max_requests:
                self._fail(
                    result,
                    f"stopped after {self.max_requests} requests: the IVR seems to loop",
                    None,
                )
                break
            sent += 1
            params = self._call_params("ringing" if first else "in-progress") | step.params
            first = False
            document_url, _ = urldefrag(step.url)
            event = self._request(result, step.kind, step.method, document_url, params)
            step = self._answer(result, event, document_url, inputs)
        if self.send_status:
            self.hang_up(result)
        return result

    def hang_up(self, result: CallResult) -> None:
        """The caller hangs up: Twilio posts the status callback. `play` does it unless the
        player was made with `send_status=False` (a caller left on hold in a queue)."""
        params = self._call_params("completed") | {
            "CallDuration": str(int(time.monotonic() - self._started)),
            "Timestamp": format_datetime(datetime.now(UTC)),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
        }
        self._request(result, "status", "POST", self.status_url, params)

    # -- requests -----------------------------------------------------------------------------

    def _call_params(self, status: str) -> dict[str, str]:
        """The parameters Twilio puts on every request of an inbound call."""
        return {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "From": self.from_number,
            "To": self.to_number,
            "Caller": self.from_number,
            "Called": self.to_number,
            "CallStatus": status,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        } | self.extra_params

    def _headers(self, signature: str) -> dict[str, str]:
        return {
            SIGNATURE_HEADER: signature,
            "User-Agent": USER_AGENT,
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }

    def _request(
        self, result: CallResult, kind: str, method: str, url: str, params: dict[str, str]
    ) -> Event:
        """Sign and send one webhook; transport failures become status 0, not exceptions."""
        if method == "GET":
            # Twilio sends GET webhooks with its parameters appended to the query string and
            # signs that full URL with no body parameters.
            query = urlencode(sorted(params.items()))
            url = f"{url}{'&' if '?' in url else '?'}{query}"
            signature = self._validator.compute_signature(url, {})
        else:
            signature = self._validator.compute_signature(url, params)
        try:
            if method == "GET":
                reply = self.transport.get(url, self._headers(signature))
            else:
                reply = self.transport.post(url, dict(params), self._headers(signature))
        except TransportError as exc:
            reply = Reply(status=0, body=str(exc), content_type="")
        event = Event(
            kind=kind,
            method=method,
            url=url,
            params=dict(params),
            status=reply.status,
            body=reply.body,
            content_type=reply.content_type,
        )
        result.events.append(event)
        self._emit(result, "request", f"[{method} {url} -> {reply.status or 'no answer'}]")
        return event

    def _answer(
        self, result: CallResult, event: Event, document_url: str, inputs: InputSource
    ) -> _Next | None:
        """Turn one webhook answer into the next request, or end the call."""
        if event.status != 200:
            what = f"HTTP {event.status}" if event.status else "no answer"
            self._fail(result, f"{what} from {event.method} {event.url}", event.status)
            return None
        try:
            verbs = parse_twiml(event.body)
        except TwimlError as exc:
            self._fail(result, f"bad TwiML from {event.method} {event.url}: {exc}", event.status)
            return None
        result.responses.append(event.body)
        try:
            return self._run(result, verbs, document_url, inputs)
        except _Ended:
            return None

    # -- verbs --------------------------------------------------------------------------------

    def _run(
        self, result: CallResult, verbs: Sequence[Verb], document_url: str, inputs: InputSource
    ) -> _Next | None:
        """Execute one document's verbs; returns the next request or None when the call ends."""
        for verb in verbs:
            match verb:
                case Say() | Play() | Pause():
                    self._hear(result, verb)
                case Gather():
                    step = self._gather(result, verb, document_url, inputs)
                    if step is not None:
                        return step
                case Redirect(url=url, method=method):
                    return _Next("redirect", method, urljoin(document_url, url), {})
                case Enqueue():
                    result.enqueue = verb
                    result.queue = verb.queue or None
                    name = verb.queue or f"workflow {verb.workflow_sid}"
                    self._end(result, "enqueued", f"-> enqueued in queue {name!r}")
                case Dial(target=target):
                    result.dialed = target
                    self._end(result, "dialed", f"-> dialed {target}")
                case Hangup() | Reject():
                    self._end(result, "hung_up", f"-> hung up (<{type(verb).__name__}>)")
                case Unknown(tag=tag):
                    self._emit(result, "skip", f"(simulator skips unsupported <{tag}>)")
        self._end(result, "hung_up", "-> hung up (end of TwiML)")

    def _hear(self, result: CallResult, verb: Say | Play | Pause) -> None:
        match verb:
            case Say(text=text):
                result.heard.append(text)
                self._emit(result, "say", f"IVR: {text}")
            case Play(url=url, digits=digits):
                self._emit(result, "play", f"IVR plays {url or 'tones ' + (digits or '')}")
            case Pause(length=length):
                self._emit(result, "pause", f"IVR pauses {length}s")
                if self.pause_scale > 0:
                    time.sleep(length * self.pause_scale)

    def _gather(
        self, result: CallResult, gather: Gather, document_url: str, inputs: InputSource
    ) -> _Next | None:
        """Play the prompts, ask the caller, and build the action request (None: fall through)."""
        for child in gather.children:
            self._hear(result, child)
        answer = inputs(gather, list(result.heard))
        params = self._gather_params(result, gather, answer)
        if params is None and not gather.action_on_empty_result:
            return None
        action = urljoin(document_url, gather.action) if gather.action else document_url
        return _Next("gather", gather.method, action, params or {})

    def _gather_params(
        self, result: CallResult, gather: Gather, answer: CallerInput | None
    ) -> dict[str, str] | None:
        """What Twilio would post for this answer, or None when it counts as no input."""
        match answer:
            case None:
                self._emit(result, "silence", "CALLER stays silent")
                return None
            case Keys(digits=typed):
                self._emit(result, "keys", f"CALLER pressed {typed}")
                if not gather.accepts_dtmf:
                    self._emit(result, "ignored", f"(<Gather input={gather.input!r}> ignores keys)")
                    return None
                digits, finished = _collect(typed, gather)
                if not digits:  # only "#": treated as no input (assumed, unverified)
                    return None
                return {"Digits": digits, "FinishedOnKey": finished}
            case Speech(text=text, confidence=confidence):
                confidence_text = _confidence(confidence)
                self._emit(result, "speech", f'CALLER said "{text}" ({confidence_text})')
                if not gather.accepts_speech:
                    self._emit(
                        result, "ignored", f"(<Gather input={gather.input!r}> ignores speech)"
                    )
                    return None
                if not text.strip():
                    return None
                return {"SpeechResult": text, "Confidence": confidence_text}
        raise TypeError(f"an InputSource returned {answer!r}; expected Keys, Speech or None")

    # -- bookkeeping ------------------------------------------------------------------------------

    def _emit(self, result: CallResult, kind: str, line: str) -> None:
        result.log.append((kind, line))
        if self.observer is not None:
            self.observer(kind, line)

    def _end(self, result: CallResult, outcome: Outcome, line: str) -> NoReturn:
        result.outcome = outcome
        self._emit(result, "outcome", line)
        raise _Ended

    def _fail(self, result: CallResult, reason: str, status: int | None) -> None:
        result.outcome = "error"
        result.error = reason
        result.error_status = status
        self._emit(result, "outcome", f"-> error: {reason}")


def _collect(typed: str, gather: Gather) -> tuple[str, str]:
    """Apply finishOnKey and numDigits to keypresses: returns (Digits, FinishedOnKey).

    Keys after the finish key or beyond numDigits are never heard by this Gather, as on Twilio.
    Input that just runs out ended by timeout, so FinishedOnKey is empty.
    """
    digits = ""
    for key in typed:
        if gather.finish_on_key and key == gather.finish_on_key:
            return digits, key
        digits += key
        if gather.num_digits is not None and len(digits) >= gather.num_digits:
            break
    return digits, ""


def _confidence(value: float) -> str:
    """Format like Twilio's Confidence: a plain decimal, "0.92" not "9.2e-01"."""
    text = f"{value:.8f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _join(base_url: str, path: str) -> str:
    """Append a webhook path to the configured base URL, keeping any path prefix of the base."""
    if "://" in path:
        return path
    return base_url.rstrip("/") + "/" + path.lstrip("/")
