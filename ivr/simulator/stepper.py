"""Play a call one caller answer at a time: the simulator behind the browser phone (`/dev/phone`).

`CallPlayer.play` asks its `InputSource` at each <Gather> and waits for the answer inside the
call; a person at a web page answers in a later HTTP request, perhaps served by another process.
`SteppedPlayer` therefore plays until the IVR waits for the caller and stops there, handing back
a `Waiting`: plain data (the TwiML document holding the <Gather>, where the <Gather> is in it,
how many requests the leg has sent) from which `answer` goes on later, in any process. Everything
else is the player's own: the same signed requests, the same verb semantics, the same log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urldefrag, urljoin

from ivr.simulator.player import CallerInput, CallPlayer, CallResult, _Ended, _Next
from ivr.simulator.twiml import Gather, TwimlError, Verb, parse_twiml

__all__ = ["Step", "SteppedPlayer", "Waiting"]


@dataclass(frozen=True)
class Waiting:
    """Where a call waits for the caller: the <Gather> at `index` of `document`, its prompts
    already heard. `requests` carries the player's loop guard across steps."""

    document_url: str
    document: str
    index: int
    requests: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Waiting:
        if not isinstance(data, dict) or set(data) != set(cls.__dataclass_fields__):
            raise ValueError("not a waiting call")
        url, document, index, requests = (
            data["document_url"], data["document"], data["index"], data["requests"],
        )  # fmt: skip
        if not (isinstance(url, str) and isinstance(document, str)):
            raise ValueError("not a waiting call")
        if not (isinstance(index, int) and isinstance(requests, int)) or index < 0 or requests < 0:
            raise ValueError("not a waiting call")
        return cls(url, document, index, requests)

    def gather(self) -> Gather:
        verbs = parse_twiml(self.document)
        if self.index >= len(verbs) or not isinstance(verbs[self.index], Gather):
            raise TwimlError(f"no <Gather> at position {self.index} of the document")
        verb = verbs[self.index]
        assert isinstance(verb, Gather)
        return verb


@dataclass
class Step:
    """What one step played (`result` holds only this step's lines, requests and TwiML), and
    where the call now waits, or None once it has ended (`result.outcome` says how)."""

    result: CallResult
    waiting: Waiting | None

    @property
    def gather(self) -> Gather | None:
        return self.waiting.gather() if self.waiting else None


class _Asked(Exception):  # control flow only: the IVR asks, the person answers later
    def __init__(self, gather: Gather) -> None:
        self.gather = gather


def _ask(gather: Gather, heard_so_far: list[str]) -> CallerInput | None:
    raise _Asked(gather)


class SteppedPlayer(CallPlayer):
    """A `CallPlayer` for one leg that stops at each question instead of asking an InputSource.

    Construct it with the leg's fixed `call_sid` on every step. The status callback is posted
    when the IVR ends the call; an enqueued caller is on hold, and `hang_up_now` ends it.
    """

    def dial(self) -> Step:
        """The call rings: the first webhook, and on to the first question or the end."""
        result = CallResult(call_sid=self.call_sid)
        return self._drive(result, _Next("voice", "POST", self.voice_url, {}), 0)

    def answer(self, waiting: Waiting, answer: CallerInput | None) -> Step:
        """The caller answers the question `waiting` is at (None: stays silent)."""
        result = CallResult(call_sid=self.call_sid)
        verbs = parse_twiml(waiting.document)
        gather = waiting.gather()
        params = self._gather_params(result, gather, answer)
        if params is None and not gather.action_on_empty_result:
            # Silence falls through to the verbs after the <Gather>, as on Twilio.
            try:
                step = self._verbs(result, verbs, waiting.index + 1, waiting, waiting.requests)
            except _Paused as paused:
                return Step(result, paused.waiting)
            return self._drive(result, step, waiting.requests)
        action = urljoin(waiting.document_url, gather.action or waiting.document_url)
        return self._drive(
            result, _Next("gather", gather.method, action, params or {}), waiting.requests
        )

    def hang_up_now(self) -> CallResult:
        """The caller hangs up, waiting at a question or on hold: Twilio's status callback."""
        result = CallResult(call_sid=self.call_sid)
        self._emit(result, "outcome", "-> the caller hung up")
        self.hang_up(result)
        return result

    # -- the loop of `CallPlayer.play`, resumable ----------------------------------------------

    def _drive(self, result: CallResult, step: _Next | None, sent: int) -> Step:
        while step is not None:
            if sent >= self.max_requests:
                self._fail(
                    result,
                    f"stopped after {self.max_requests} requests: the IVR seems to loop",
                    None,
                )
                break
            sent += 1
            params = self._call_params("ringing" if sent == 1 else "in-progress") | step.params
            document_url, _ = urldefrag(step.url)
            event = self._request(result, step.kind, step.method, document_url, params)
            if event.status != 200:
                what = f"HTTP {event.status}" if event.status else "no answer"
                self._fail(result, f"{what} from {event.method} {event.url}", event.status)
                break
            try:
                verbs = parse_twiml(event.body)
            except TwimlError as exc:
                self._fail(
                    result, f"bad TwiML from {event.method} {event.url}: {exc}", event.status
                )
                break
            result.responses.append(event.body)
            here = Waiting(document_url, event.body, 0, sent)
            try:
                step = self._verbs(result, verbs, 0, here, sent)
            except _Paused as paused:
                return Step(result, paused.waiting)
        if result.outcome != "enqueued":
            self.hang_up(result)
        return Step(result, None)

    def _verbs(
        self, result: CallResult, verbs: list[Verb], start: int, here: Waiting, sent: int
    ) -> _Next | None:
        """Run `verbs[start:]`; raises `_Paused` at a <Gather>, returns the next request or
        None when the call ended."""
        rest = verbs[start:]
        try:
            return self._run(result, rest, here.document_url, _ask)
        except _Ended:
            return None
        except _Asked as asked:
            index = start + next(i for i, verb in enumerate(rest) if verb is asked.gather)
            raise _Paused(Waiting(here.document_url, here.document, index, sent)) from None


class _Paused(Exception):  # control flow only, never leaves this module
    def __init__(self, waiting: Waiting) -> None:
        self.waiting = waiting
