"""Helpers shared by the unit and the integration tests: plain functions and classes, no fixtures.

Fixtures live in the conftest files; a test module imports what it needs from here
(`from tests.support import ...`). Everything works on fakeredis and on a real Redis alike.

- What rests in Redis: `redis_snapshot` (every key and value, for before/after comparisons),
  `redis_contents` (one blob to search for a secret, rq's compressed and pickled job data
  decoded), `contains_code`, `assert_not_in_redis`, `call_keys`, and the audit stream
  (`audit_events`, `authentications`, `deliveries`).
- What a simulated call got: `webhook_bodies`, `assert_well_served`, `never_enqueued`,
  `assert_never_enqueued`.
- Callers and wires: `sign`, `make_player`, `seed_customer`, `TimedTransport`, `DeliverTwice`,
  `pin_caller` (a default-flow caller who keys given PINs, e.g. one PIN sprayed at an account).
- Shared by the webhook, possession and code-call test modules: prompts (`APOLOGY`, ...), TwiML
  readers (`verbs`, `said`, `gather_action`), code-call callers (`StrictTurns`, `Handset`), and
  `edit`, `line_of`, `runtime_of` for the flow and runtime tests.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from flask import Flask
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator

from ivr import simulator
from ivr.outbox import Outbox, OutboxMessage
from ivr.processes import QUEUE
from ivr.runtime import EXTENSION, Runtime, make_abuse_guard
from ivr.settings import load_settings
from ivr.simulator import (
    CallPlayer,
    CallResult,
    Enqueue,
    Gather,
    Hangup,
    HttpTransport,
    InputSource,
    Keys,
    Reply,
    Say,
    Speech,
    Transport,
    parse_twiml,
    scripted,
)
from ivr.simulator.phone import Phone
from ivr.store.abuse import AbuseGuard
from ivr.store.audit import AuditLog
from ivr.store.codes import CodeStore
from ivr.store.customers import Customer, RedisCustomerDirectory
from ivr.store.send_caps import SendLimits
from ivr.store.sessions import SessionStore

#: Seconds: Twilio gives up on a webhook after 15 s, and each answer must be far inside that.
WEBHOOK_BOUND = 2.0

AUDIT_STREAM = "ivr:audit"
SIGNATURE_HEADER = "X-Twilio-Signature"


# --------------------------------------------------------------------------------------------
# What rests in Redis
# --------------------------------------------------------------------------------------------


def redis_snapshot(conn: Any) -> dict[bytes, Any]:
    """Every key with its value, whatever the type, for before/after comparisons."""
    out: dict[bytes, Any] = {}
    for key in conn.scan_iter("*"):
        kind = conn.type(key)
        if kind == b"hash":
            out[key] = conn.hgetall(key)
        elif kind == b"string":
            out[key] = conn.get(key)
        elif kind == b"set":
            out[key] = sorted(conn.smembers(key))
        elif kind == b"list":
            out[key] = conn.lrange(key, 0, -1)
        elif kind == b"zset":
            out[key] = conn.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            out[key] = conn.xrange(key)
        else:  # pragma: no cover - a type neither we nor rq write
            raise AssertionError(f"unexpected redis type {kind!r} for {key!r}")
    return out


def _rq_job_text(conn: Any, name: str) -> bytes | None:
    """An rq job decoded: its arguments, meta and latest result (return value or traceback).

    rq keeps a job's arguments zlib-compressed and pickled, and its results base64-encoded in
    a stream, where a plain search of the stored bytes would never see a code.
    """
    try:
        job = Job.fetch(name.removeprefix("rq:job:"), connection=conn)
    except NoSuchJobError:
        return None  # finished and deleted between the scan and the fetch
    latest = job.latest_result()
    outcome = (latest.return_value, latest.exc_string) if latest else None
    return (
        f"{name} args={job.args!r} kwargs={job.kwargs!r} meta={job.meta!r} "
        f"latest_result={outcome!r}"
    ).encode()


def redis_contents(conn: Any) -> bytes:
    """Every key and value in Redis, whatever its type, as one blob to search for a secret.

    Each stored value is there as stored and, where it is zlib-compressed (the `data` of
    `rq:job:*`), decompressed too; each rq job is also there decoded (`args=(...) kwargs=...
    meta=... latest_result=...`), arguments and results unpickled.
    """
    parts: list[bytes] = []

    def add(value: Any) -> None:
        if isinstance(value, bytes):
            parts.append(value)
            with contextlib.suppress(zlib.error):
                parts.append(zlib.decompress(value))
        elif isinstance(value, dict):
            for k, v in value.items():
                add(k)
                add(v)
        elif isinstance(value, list | tuple):
            for item in value:
                add(item)
        else:
            parts.append(str(value).encode())

    for key, value in redis_snapshot(conn).items():
        add(key)
        add(value)
        name = key.decode()
        if isinstance(value, dict) and name.startswith("rq:job:") and name.count(":") == 2:
            decoded = _rq_job_text(conn, name)
            if decoded is not None:
                parts.append(decoded)
    return b"\n".join(parts)


def contains_code(text: str | bytes, code: str) -> bool:
    """The code as a number of its own (a timestamp's digits that happen to include it do not
    count; the code glued to letters or punctuation does)."""
    pattern = rf"(?<![0-9]){re.escape(code)}(?![0-9])"
    if isinstance(text, bytes):
        return re.search(pattern.encode(), text) is not None
    return re.search(pattern, text) is not None


def assert_not_in_redis(conn: Any, code: str) -> None:
    assert not contains_code(redis_contents(conn), code), f"code {code} found in Redis"


def call_keys(conn: Any) -> list[bytes]:
    """The keys of the call sessions in Redis, sorted."""
    return sorted(conn.scan_iter(match="ivr:call:*"))


def audit_events(conn: Any, call_sid: str | None = None) -> list[dict[str, str]]:
    """The audit stream, oldest first; only the events of `call_sid` if given."""
    entries = [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in conn.xrange(AUDIT_STREAM)
    ]
    return [e for e in entries if call_sid is None or e.get("call_sid") == call_sid]


def _outcomes(conn: Any, call_sid: str, event: str) -> list[tuple[str, str]]:
    return [
        (e["method"], e["outcome"]) for e in audit_events(conn, call_sid) if e["event"] == event
    ]


def authentications(conn: Any, call_sid: str) -> list[tuple[str, str]]:
    """(method, outcome) of every authentication attempt of the call, in order."""
    return _outcomes(conn, call_sid, "authenticate")


def deliveries(conn: Any, call_sid: str) -> list[tuple[str, str]]:
    """(method, outcome) of every delivery event (code sent, call back placed) of the call."""
    return _outcomes(conn, call_sid, "delivery")


def seed_customer(url: str, customer: Customer) -> Customer:
    """Store `customer` (already hashed) in the Redis at `url`, as enrolment would."""
    with redis.Redis.from_url(url) as conn:
        RedisCustomerDirectory(conn).add(customer)
    return customer


# --------------------------------------------------------------------------------------------
# What a simulated call got
# --------------------------------------------------------------------------------------------


def webhook_bodies(result: CallResult) -> list[str]:
    """The TwiML of every webhook answer of the call, in order (status callback excluded)."""
    return [event.body for event in result.events if event.kind != "status"]


def assert_well_served(result: CallResult) -> None:
    """Every webhook got 200 TwiML and the final status callback got 204."""
    transcript = result.transcript(requests=True)
    webhooks = [event for event in result.events if event.kind != "status"]
    assert webhooks, transcript
    for event in webhooks:
        assert event.status == 200, f"{event.url}: HTTP {event.status}\n{transcript}"
        assert event.content_type.startswith("application/xml"), transcript
    status = result.status_callback
    assert status is not None and status.status == 204, transcript


def never_enqueued(result: CallResult) -> bool:
    return result.queue is None and not any("<Enqueue" in body for body in webhook_bodies(result))


def assert_never_enqueued(result: CallResult) -> None:
    assert result.outcome != "enqueued", result.transcript(requests=True)
    assert result.queue is None
    assert all("<Enqueue" not in e.body for e in result.events)


# --------------------------------------------------------------------------------------------
# Callers and wires
# --------------------------------------------------------------------------------------------


def sign(token: str, url: str, params: dict[str, str]) -> dict[str, str]:
    """The header Twilio would send with `params` POSTed to `url`, signed with `token`."""
    return {SIGNATURE_HEADER: RequestValidator(token).compute_signature(url, params)}


def ringing_call() -> dict[str, str]:
    """What Twilio POSTs to /voice when a new call rings (a fresh CallSid each time)."""
    return {
        "CallSid": "CA" + secrets.token_hex(16),
        "AccountSid": simulator.FAKE_ACCOUNT_SID,
        "From": "+14155550100",
        "To": "+15005550001",
        "CallStatus": "ringing",
        "Direction": "inbound",
    }


def make_player(
    base_url: str, auth_token: str, transport: Transport | None = None, **options: Any
) -> CallPlayer:
    """A simulated caller over `transport` (default: real HTTP). A caller on hold really waits
    (`pause_scale` 1.0) unless `options` say otherwise, giving a worker its time."""
    return CallPlayer(transport or HttpTransport(), base_url, auth_token, **options)


class TimedTransport(simulator.TimedTransport):
    """Times every answer (`sent`, in order); `assert_prompt()` checks each was quick."""

    def assert_prompt(self, bound: float = WEBHOOK_BOUND) -> None:
        slow = [(s.path, round(s.elapsed, 3)) for s in self.sent if s.elapsed >= bound]
        assert not slow, f"webhooks slower than {bound} s: {slow}"


class DeliverTwice:
    """Delivers the first request for `path` twice, byte for byte (same signature, same
    idempotency token), as Twilio does when the first answer did not reach it in time; then
    calls `after()`, if given. `replies` holds the two answers."""

    def __init__(
        self, inner: Transport, path: str, after: Callable[[], None] | None = None
    ) -> None:
        self.inner = inner
        self.path = path
        self.after = after
        self.replies: list[Reply] = []

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        reply = self.inner.post(url, params, headers)
        if urlsplit(url).path == self.path and not self.replies:
            self.replies.append(reply)
            self.replies.append(self.inner.post(url, dict(params), dict(headers)))
            if self.after is not None:
                self.after()
            return self.replies[-1]
        return reply

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        return self.inner.get(url, headers)


def pin_caller(account: str, *pins: str) -> InputSource:
    """A caller of the default flow who claims `account`, keys each of `pins` at the PIN
    prompt (one attempt each), then stays silent; if the door opens, asks for the balance queue.
    Answers by prompt, so it follows the flow wherever a failure or a refusal leads."""
    left = list(pins)

    def answer(gather: Gather, heard: list[str]) -> Keys | None:
        prompt = heard[-1] if heard else ""
        if "your account number" in prompt:
            return Keys(f"{account}#")
        if prompt.startswith("For PIN, press 1"):
            return Keys("1") if left else None
        if prompt.startswith("Enter your PIN"):
            return Keys(f"{left.pop(0)}#")
        if "you are verified" in prompt:
            return Keys("1")
        return None

    return answer


# --------------------------------------------------------------------------------------------
# Every queue of the default flow, and what may travel there (issue 7)
# --------------------------------------------------------------------------------------------

#: The only keys a task's attributes may have.
TASK_KEYS = frozenset({"call_ref", "intent", "assurance", "methods", "signals"})

#: (main menu key, card check key) for each way into a queue of the default flow; a callback
#: path ends the first call and goes on in the call back.
QUEUE_PATHS: dict[str, tuple[str, str | None]] = {
    "balances": ("1", None),
    "general": ("0", None),
    "card-services by sms": ("2", "1"),
    "card-services by callback": ("2", "3"),
    "card-services by service code": ("2", "4"),
}


def queue_caller(
    account: str,
    pin: str,
    path: str,
    codes: Callable[[], str | None] = lambda: None,
    service_code: str | None = None,
) -> InputSource:
    """A default-flow caller who claims `account`, proves `pin`, and takes `path` (a key of
    QUEUE_PATHS); at a code prompt keys what `codes()` reads off the phone. Answers by prompt,
    and is silent at anything it does not expect, so the IVR ends such a call its own way."""
    menu, method = QUEUE_PATHS[path]

    def answer(gather: Gather, heard: list[str]) -> Keys | None:
        prompt = heard[-1] if heard else ""
        if "your account number" in prompt:
            return Keys(f"{account}#")
        if prompt.startswith("For PIN, press 1"):
            return Keys("1")
        if prompt.startswith("Enter your PIN"):
            return Keys(f"{pin}#")
        if "you are verified" in prompt:
            return Keys(menu)
        if prompt.startswith("Card changes need one more check") and method is not None:
            return Keys(method)
        if "the code we" in prompt:
            code = codes()
            return Keys(f"{code}#") if code else None
        if "service code shown" in prompt and service_code is not None:
            return Keys(f"{service_code}#")
        if "To continue, press 1" in prompt:
            return Keys("1")
        return None

    return answer


def personal_values(
    account: str, phone: str, email: str, pin: str, name: str = "", address: str = ""
) -> list[str]:
    """What identifies a customer, whole and in the parts an agent could recognise."""
    values = [account, phone, phone.lstrip("+"), phone[-7:], email, pin, name, address]
    values += name.split() + [part for part in address.replace(",", " ").split() if len(part) > 3]
    return [value for value in values if value]


def assert_no_personal_data(result: CallResult, values: list[str]) -> None:
    """Nothing of `values` in the task attributes, the queue name, or any URL of the call."""
    enqueue = result.enqueue
    assert enqueue is not None, result.transcript(requests=True)
    places = {
        "task attributes": enqueue.task or "",
        "queue name": enqueue.queue,
        "urls": " ".join(event.url for event in result.events),
    }
    for where, text in places.items():
        for value in values:
            assert value.casefold() not in text.casefold(), f"{value!r} in the {where}: {text}"


#: twilio-facts.md: `TN-Validation-Passed-A|B|C`, `TN-Validation-Failed-A|B|C`,
#: `TN-Validation-Failed`, `No-TN-Validation`, and suffixed forms such as `-Diverted`,
#: `-Passthrough`.
_VERDICTS = {
    "TN-Validation-Passed-A": "A",
    "TN-Validation-Passed-B": "B",
    "TN-Validation-Passed-C": "C",
    "TN-Validation-Failed-A": "failed",
    "TN-Validation-Failed-B": "failed",
    "TN-Validation-Failed-C": "failed",
    "TN-Validation-Failed": "failed",
    "No-TN-Validation": "absent",
}
_SUFFIXES = {"": None, "-Diverted": "diverted", "-Passthrough": "passthrough"}
#: (StirVerstat, attestation, attestation_path) for every value of the reference.
STIR_VERSTATS = [
    (verdict + suffix, value, path)
    for verdict, value in _VERDICTS.items()
    for suffix, path in _SUFFIXES.items()
]
# Services built as the runtime builds them
# --------------------------------------------------------------------------------------------


def lax_abuse_guard(conn: Any, audit: AuditLog) -> AbuseGuard:
    """An abuse guard as the runtime builds it, with limits no test of other rules reaches."""
    settings = load_settings(
        abuse_number_failures=1000,
        abuse_number_accounts=100,
        abuse_withheld_failures=10000,
        abuse_account_numbers=100,
        abuse_global_failures=1000000,
    )
    return make_abuse_guard(settings, conn, audit)


# --------------------------------------------------------------------------------------------
# Scripted callers and waiting
# --------------------------------------------------------------------------------------------

Answer = simulator.CallerInput | None | Callable[[], simulator.CallerInput]


class Turns:
    """The caller's answers, each with the step it must be asked at (the answer may be made at
    that moment, e.g. the code just sent); silent once spent, so the IVR ends the call its own
    way."""

    def __init__(self, *turns: tuple[str, Answer]) -> None:
        self.turns = list(turns)

    def __call__(self, gather: Gather, heard: list[str]) -> simulator.CallerInput | None:
        step = urlsplit(gather.action or "").path.rsplit("/", 1)[-1]
        if not self.turns:
            return None
        expected, answer = self.turns.pop(0)
        assert step == expected, f"asked at {step!r}, expected {expected!r}; heard {heard[-1:]}"
        return answer() if callable(answer) else answer


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, poll: float = 0.1
) -> None:
    """Poll `condition` until it holds; fail saying `what` did not happen within `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        time.sleep(poll)


# --------------------------------------------------------------------------------------------
# Voice webhooks driven request by request
# --------------------------------------------------------------------------------------------


APOLOGY = "We are sorry, we cannot take your call right now"
OTHER_ROUTE = "We could not verify your identity on this call"
DID_NOT_MATCH = "That did not match our records"
VERIFIED = "Thank you, you are verified"
WRONG_PIN = "999999"
SID = "CA" + "0123456789abcdef" * 2


def verbs(body: bytes | str) -> list[Any]:
    return parse_twiml(body.decode() if isinstance(body, bytes) else body)


def gather_action(body: bytes | str) -> str:
    """The action URL of the (single) Gather in a reply: where the caller's answer goes."""
    gathers = [v for v in verbs(body) if isinstance(v, Gather)]
    assert len(gathers) == 1, body
    assert gathers[0].action is not None
    return gathers[0].action


def said(body: bytes | str) -> str:
    parts: list[str] = []
    for verb in verbs(body):
        if isinstance(verb, Say):
            parts.append(verb.text)
        elif isinstance(verb, Gather):
            parts.extend(c.text for c in verb.children if isinstance(c, Say))
    return " ".join(parts)


def assert_apology(body: bytes | str) -> None:
    parsed = verbs(body)
    assert any(isinstance(v, Say) and APOLOGY in v.text for v in parsed), body
    assert isinstance(parsed[-1], Hangup), body
    assert not any(isinstance(v, Enqueue | Gather) for v in parsed), body


def auth_events(rt: Runtime) -> list[dict[str, Any]]:
    return [e for e in rt.audit.recent(10_000) if e["event"] == "authenticate"]


def state_of(redis: Any, call_sid: str = SID) -> Any:
    stored = SessionStore(redis, 3600).load(call_sid)
    assert stored is not None
    return stored.state


def two_attempts(account: str, first: Any, second: Any, method_key: str = "1") -> Any:
    return scripted(Keys(account + "#"), Keys(method_key), first, Keys(method_key), second)


# --------------------------------------------------------------------------------------------
# Possession factors without a call
# --------------------------------------------------------------------------------------------


KEY = "k" * 32
T0 = 1_800_000_000.0
TEN_MINUTES = 600
DAY = 86_400


# CallSids without digit runs, so a 6-digit code can only be found in Redis if it is there.
SID_A = "CA" + "ab" * 16


CALLER = "+15005550006"  # calls from a number that is not on file for anyone
UNKNOWN_ACCOUNT = "99999999"
LIMITS = SendLimits(account=5, destination=5, prefix=200, window=600, per_call=3, call_window=3600)


def queued(redis: Any) -> list[Job]:
    queue = Queue(QUEUE, connection=redis)
    return [job for job in (queue.fetch_job(i) for i in queue.job_ids) if job is not None]


def outbox(path: Path) -> list[OutboxMessage]:
    return Outbox(path).messages()


def delivery(redis: Any, call_sid: str = SID_A, method: str = "sms_otp") -> str | None:
    return CodeStore(redis).delivery(call_sid, method)


def audit_outcomes(rt: Runtime, event: str = "delivery") -> list[str]:
    return [e.get("outcome", "") for e in reversed(rt.audit.recent(1000)) if e["event"] == event]


# --------------------------------------------------------------------------------------------
# Whole calls that step up with a code or a call back
# --------------------------------------------------------------------------------------------


HOLD_SMS = "Please hold while we text a code to the phone number on file."
HOLD_EMAIL = "Please hold while we email a code to the address on file."
CODE_WRONG = "That code did not match. You have 1 attempt left."
NO_SMS = "Sorry, we cannot send a text message to the phone number on file."
CARD_CHECK = "Card changes need one more check."
CARD_SERVICES = "Connecting you to our card services team."
OUR_NUMBER = "+15005550001"


# flows/default.yaml offers no emailed code for a card change (NIST SP 800-63B rev 4); this
# flow still does, with the same step names, for the tests of email delivery.
EMAIL_FLOW = Path(__file__).resolve().parent / "flows" / "email.yaml"


StrictAnswer = Keys | Speech | None | Callable[[], Keys | None]


def step_of(gather: Gather) -> str:
    """The step a question belongs to: its action is /voice/step/<step>?seq=N."""
    return urlsplit(gather.action or "").path.rsplit("/", 1)[-1]


class StrictTurns:
    """The caller's answers, in order, each with the step it must be asked at.

    An `InputSource` for `CallPlayer.play`: a question at an unexpected step, or one question
    too many, fails the test with what the caller last heard.
    """

    def __init__(self, *turns: tuple[str, StrictAnswer]) -> None:
        self.turns = list(turns)
        self.next = 0

    def __call__(self, gather: Gather, heard: list[str]) -> Keys | Speech | None:
        step = step_of(gather)
        last = heard[-1] if heard else "(nothing)"
        assert self.next < len(self.turns), f"unscripted question at {step!r}; heard {last!r}"
        expected, answer = self.turns[self.next]
        assert step == expected, f"asked at {step!r}, expected {expected!r}; heard {last!r}"
        self.next += 1
        return answer() if callable(answer) else answer

    @property
    def done(self) -> bool:
        return self.next == len(self.turns)


class Handset:
    """The customer's phone and mailbox: codes are read off it when the IVR asks for them."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = Outbox(outbox)
        self.phone = Phone(self.outbox)
        self.used: list[str] = []

    def latest(self) -> str:
        code = self.phone.latest_code()
        assert code is not None, "no code has arrived"
        return code

    def key_in_latest(self) -> Keys:
        """(an StrictAnswer) Key in the newest code received, then pound."""
        self.used.append(self.latest())
        return Keys(self.used[-1] + "#")

    def key_in_wrong(self) -> Keys:
        """(an StrictAnswer) Key in a code that is not the newest one."""
        right = self.latest()
        self.used.append(f"{(int(right) + 1) % 10 ** len(right):0{len(right)}d}")
        return Keys(self.used[-1] + "#")

    def key_in_earlier(self) -> Keys:
        """(an StrictAnswer) Key in the code received before the newest one."""
        codes = self.codes()
        assert len(codes) >= 2, codes
        self.used.append(codes[-2])
        return Keys(codes[-2] + "#")

    def messages(self, channel: str | None = None) -> list[OutboxMessage]:
        return [m for m in self.outbox.messages() if channel is None or m.channel == channel]

    def codes(self) -> list[str]:
        found = []
        for message in self.messages():
            if message.channel in ("sms", "email"):
                match = re.search(r"(?<![0-9])([0-9]{6,10})(?![0-9])", message.body)
                assert match, message.body
                found.append(match.group(1))
        return found


def silent(step: str, times: int = 3) -> list[tuple[str, StrictAnswer]]:
    """Say nothing until the menu gives up (goodbye)."""
    return [(step, None)] * times


def polls(result: CallResult) -> int:
    return sum("/voice/poll/" in e.url for e in result.events if e.kind != "status")


def pauses(result: CallResult) -> int:
    return sum(kind == "pause" for kind, _ in result.log)


def assert_card_services(result: CallResult) -> None:
    assert result.outcome == "enqueued", result.transcript(requests=True)
    assert result.queue == "card-services"
    assert result.heard[-1] == CARD_SERVICES


def heard_in_order(result: CallResult, *texts: str) -> bool:
    """Whether the caller heard each text (as a substring), in this order."""
    position = 0
    for text in texts:
        while position < len(result.heard) and text not in result.heard[position]:
            position += 1
        if position == len(result.heard):
            return False
        position += 1
    return True


def code_nowhere_but_digits(result: CallResult, code: str) -> None:
    """The code travels once, as the caller's Digits: never in a URL or in TwiML."""
    for event in result.events:
        assert code not in event.url
        assert code not in event.body
    typed = [e for e in result.events if e.params.get("Digits") == code]
    assert len(typed) == 1


def auth_outcomes(rt: Runtime, method: str) -> list[str]:
    return [
        e["outcome"]
        for e in reversed(rt.audit.recent(1000))
        if e["event"] == "authenticate" and e["method"] == method
    ]


# --------------------------------------------------------------------------------------------
# Helpers several test modules had each written again
# --------------------------------------------------------------------------------------------


def edit(text: str, old: str, new: str) -> str:
    """Replace text that must be there, so a stale fixture cannot make a test pass vacuously."""
    assert text.count(old) == 1, f"fixture must contain {old!r} exactly once"
    return text.replace(old, new)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing `needle`."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} occurs {len(hits)} times"
    return hits[occurrence - 1]


def runtime_of(app: Flask) -> Runtime:
    rt = app.extensions[EXTENSION]
    assert isinstance(rt, Runtime)
    return rt


# --------------------------------------------------------------------------------------------
# The twilio client's HTTP boundary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwilioSent:
    """One request the `twilio` client sent: query `params` (GET) and form `data` (POST)."""

    method: str
    url: str
    params: dict[str, object]
    data: dict[str, object]
    auth: tuple[str, str] | None
    client_timeout: float | None  # the timeout the TwilioHttpClient was built with


class TwilioHttp:
    """What the `twilio` client sent over HTTP, and the answers queued for it: (status, JSON
    body) or an exception to raise. `install` patches `TwilioHttpClient.request`, the client's
    own transport, so nothing of ours is mocked."""

    def __init__(self) -> None:
        self.answers: deque[tuple[int, Any] | Exception] = deque()
        self.sent: list[TwilioSent] = []

    def answer(self, *answers: tuple[int, Any] | Exception) -> None:
        self.answers.extend(answers)

    @property
    def only(self) -> TwilioSent:
        assert len(self.sent) == 1, self.sent
        return self.sent[0]

    def install(self, monkeypatch: Any) -> TwilioHttp:
        http = self

        def request(
            client: TwilioHttpClient,
            method: str,
            url: str,
            params: dict[str, object] | None = None,
            data: dict[str, object] | None = None,
            headers: dict[str, str] | None = None,
            auth: tuple[str, str] | None = None,
            timeout: float | None = None,
            allow_redirects: bool = False,
        ) -> Response:
            sent = TwilioSent(
                method, url, dict(params or {}), dict(data or {}), auth, client.timeout
            )
            http.sent.append(sent)
            if not http.answers:
                raise AssertionError(f"unexpected Twilio request: {method} {url}")
            reply = http.answers.popleft()
            if isinstance(reply, Exception):
                raise reply
            status, payload = reply
            return Response(status, json.dumps(payload))

        monkeypatch.setattr(TwilioHttpClient, "request", request)
        return self
