"""Read TwiML the way Twilio does, into plain dataclasses the call player can act on.

Only the verbs the IVR uses are modelled; anything else becomes `Unknown` so a new verb shows up
in a transcript instead of crashing the simulator. Documents Twilio itself would reject
(wrong root, verbs Gather cannot nest, bad attribute values) raise `TwimlError`, because a
simulator that accepted them would pass tests for calls that fail on the real network.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ivr.errors import IvrError

__all__ = [
    "MAX_QUEUE_NAME",
    "Dial",
    "Enqueue",
    "Gather",
    "Hangup",
    "Pause",
    "Play",
    "Redirect",
    "Reject",
    "Say",
    "TwimlError",
    "Unknown",
    "Verb",
    "parse_twiml",
]

MAX_QUEUE_NAME = 64
"""Twilio refuses longer queue names."""

_FINISH_KEYS = frozenset("0123456789#*")
_WORKFLOW_SID = re.compile(r"WW[0-9a-fA-F]{32}")
_INPUT_KINDS = frozenset({"dtmf", "speech"})


class TwimlError(IvrError):
    """The body is not TwiML Twilio would execute; the message says what is wrong."""


@dataclass(frozen=True)
class Say:
    """Text read to the caller (whitespace collapsed, SSML tags flattened to their text)."""

    text: str


@dataclass(frozen=True)
class Play:
    """An audio URL played, or DTMF tones sent with `digits`."""

    url: str
    digits: str | None = None


@dataclass(frozen=True)
class Pause:
    """Silence for `length` seconds."""

    length: int = 1


@dataclass(frozen=True)
class Gather:
    """Collects keypresses and/or speech, then requests `action` (None: the current document)."""

    action: str | None = None
    method: str = "POST"
    input: str = "dtmf"
    num_digits: int | None = None
    finish_on_key: str = "#"
    timeout: int = 5
    action_on_empty_result: bool = False
    speech_timeout: str | None = None
    language: str = "en-US"
    hints: str | None = None
    children: list[Say | Play | Pause] = field(default_factory=list)

    @property
    def accepts_dtmf(self) -> bool:
        """Whether keypresses count; with input="speech" Twilio ignores them."""
        return "dtmf" in self.input.split()

    @property
    def accepts_speech(self) -> bool:
        """Whether speech counts; with the default input="dtmf" Twilio ignores it."""
        return "speech" in self.input.split()


@dataclass(frozen=True)
class Redirect:
    """Fetch new TwiML from `url` (relative URLs resolve against the current document)."""

    url: str
    method: str = "POST"


@dataclass(frozen=True)
class Enqueue:
    """Put the caller in a queue; the call leaves the IVR's hands here."""

    queue: str
    action: str | None = None
    wait_url: str | None = None
    method: str = "POST"
    workflow_sid: str | None = None
    task: str | None = None
    """Raw text of a nested <Task> (TaskRouter attributes JSON), kept so tests can inspect it."""
    attributes: dict[str, object] | None = None
    """The <Task>'s attributes, parsed: what TaskRouter would hand the agent's contact center."""


@dataclass(frozen=True)
class Dial:
    """Connect the caller to a number/client/SIP/queue; `target` is the text dialled."""

    target: str
    noun: str | None = None
    """The nested noun's tag (Number, Client, Sip, Queue, Conference), None for plain text."""


@dataclass(frozen=True)
class Hangup:
    """End the call."""


@dataclass(frozen=True)
class Reject:
    """Refuse the call (ends it like Hangup for the simulator)."""


@dataclass(frozen=True)
class Unknown:
    """A verb the simulator does not act on (Sms, Message, Record, Connect...); skipped."""

    tag: str


Verb = Say | Play | Pause | Gather | Redirect | Enqueue | Dial | Hangup | Reject | Unknown

_DOCTYPE = re.compile(r"<!DOCTYPE", re.IGNORECASE)


def parse_twiml(body: str) -> list[Verb]:
    """Parse a webhook answer into verbs, in document order.

    Raises `TwimlError` for anything that is not a Response document Twilio would run.
    """
    text = body.lstrip()
    if not text:
        raise TwimlError("empty body: expected a TwiML Response document")
    if _DOCTYPE.search(text):
        # TwiML never needs a DTD; refusing it also keeps entity tricks out of the parser.
        raise TwimlError("TwiML must not contain a DOCTYPE")
    try:
        root = ET.fromstring(text)  # noqa: S314 -- DOCTYPE refused above, so no entities
    except ET.ParseError as exc:
        snippet = text[:80].replace("\n", " ")
        raise TwimlError(f"body is not XML ({exc}): {snippet!r}") from exc
    if root.tag != "Response":
        raise TwimlError(f"root element is <{root.tag}>, expected Response")
    return [_verb(element) for element in root]


def _verb(element: ET.Element) -> Verb:
    tag = element.tag
    if tag in ("Say", "Play", "Pause"):
        return _simple(element)
    if tag == "Gather":
        return _gather(element)
    if tag == "Redirect":
        url = _text(element)
        if not url:
            raise TwimlError("<Redirect> has no URL")
        return Redirect(url=url, method=_method(element, "method"))
    if tag == "Enqueue":
        return _enqueue(element)
    if tag == "Dial":
        return _dial(element)
    if tag == "Hangup":
        return Hangup()
    if tag == "Reject":
        return Reject()
    return Unknown(tag=tag)


def _simple(element: ET.Element) -> Say | Play | Pause:
    if element.tag == "Say":
        return Say(text=_text(element))
    if element.tag == "Play":
        digits = element.get("digits")
        url = _text(element)
        if not url and not digits:
            raise TwimlError("<Play> has neither a URL nor digits")
        return Play(url=url, digits=digits)
    return Pause(length=_int(element, "length", 1, minimum=0) or 0)


def _gather(element: ET.Element) -> Gather:
    children: list[Say | Play | Pause] = []
    for child in element:
        if child.tag not in ("Say", "Play", "Pause"):
            raise TwimlError(f"<Gather> cannot contain <{child.tag}> (only Say, Play, Pause)")
        children.append(_simple(child))

    input_kinds = (element.get("input") or "dtmf").split()
    if not input_kinds or not set(input_kinds) <= _INPUT_KINDS:
        raise TwimlError(f"<Gather input={element.get('input')!r}>: use dtmf, speech or both")

    finish_on_key = element.get("finishOnKey", "#")
    if finish_on_key and (len(finish_on_key) != 1 or finish_on_key not in _FINISH_KEYS):
        raise TwimlError(f"<Gather finishOnKey={finish_on_key!r}>: one of 0-9 # * or empty")

    return Gather(
        action=element.get("action") or None,
        method=_method(element, "method"),
        input=" ".join(input_kinds),
        num_digits=_int(element, "numDigits", None, minimum=1),
        finish_on_key=finish_on_key,
        timeout=_int(element, "timeout", 5, minimum=1) or 5,
        action_on_empty_result=_bool(element, "actionOnEmptyResult"),
        speech_timeout=element.get("speechTimeout"),
        language=element.get("language", "en-US"),
        hints=element.get("hints"),
        children=children,
    )


def _enqueue(element: ET.Element) -> Enqueue:
    queue = _text_only(element)
    workflow_sid = element.get("workflowSid")
    if not queue and not workflow_sid:
        raise TwimlError("<Enqueue> names no queue")
    if len(queue) > MAX_QUEUE_NAME:
        raise TwimlError(f"<Enqueue> queue name longer than {MAX_QUEUE_NAME} characters")
    if workflow_sid is not None and not _WORKFLOW_SID.fullmatch(workflow_sid):
        raise TwimlError(f"<Enqueue workflowSid={workflow_sid!r}>: not a TaskRouter Workflow SID")
    tasks = element.findall("Task")
    if len(tasks) > 1:
        raise TwimlError("<Enqueue> has more than one <Task>")
    task = tasks[0] if tasks else None
    attributes = None
    if task is not None:
        if workflow_sid is None:
            raise TwimlError("<Task> needs <Enqueue workflowSid=...>: only TaskRouter reads it")
        attributes = _task_attributes(task)
    return Enqueue(
        queue=queue,
        action=element.get("action"),
        wait_url=element.get("waitUrl"),
        method=_method(element, "method"),
        workflow_sid=workflow_sid,
        task=(task.text or "").strip() if task is not None else None,
        attributes=attributes,
    )


def _task_attributes(task: ET.Element) -> dict[str, object]:
    """TaskRouter takes a task's attributes as one JSON object; anything else fails the call."""
    try:
        value = json.loads(task.text or "")
    except ValueError:
        raise TwimlError("<Task> attributes are not JSON") from None
    if not isinstance(value, dict):
        raise TwimlError("<Task> attributes must be a JSON object")
    return value


def _dial(element: ET.Element) -> Dial:
    own = _text_only(element)
    if own:
        return Dial(target=own)
    for child in element:
        return Dial(target=_text(child), noun=child.tag)
    raise TwimlError("<Dial> has nothing to dial")


def _text(element: ET.Element) -> str:
    """All text inside, SSML children included, with whitespace collapsed as a listener hears it."""
    return " ".join("".join(element.itertext()).split())


def _text_only(element: ET.Element) -> str:
    """Text directly inside the element, ignoring nested nouns such as <Task> or <Number>."""
    return " ".join((element.text or "").split())


def _method(element: ET.Element, name: str) -> str:
    value = (element.get(name) or "POST").upper()
    if value not in ("GET", "POST"):
        raise TwimlError(f"<{element.tag} {name}={element.get(name)!r}>: use GET or POST")
    return value


def _int(element: ET.Element, name: str, default: int | None, *, minimum: int) -> int | None:
    raw = element.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TwimlError(f"<{element.tag} {name}={raw!r}>: not an integer") from None
    if value < minimum:
        raise TwimlError(f"<{element.tag} {name}={raw!r}>: must be at least {minimum}")
    return value


def _bool(element: ET.Element, name: str) -> bool:
    raw = element.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise TwimlError(f"<{element.tag} {name}={raw!r}>: use true or false")
