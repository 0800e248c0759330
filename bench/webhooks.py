"""Webhook latency benchmark (SECURITY.md item 4): real gunicorn, real rq worker, real Redis,
whole signed calls.

    .venv/bin/python bench/webhooks.py [--calls N] [--concurrency C] [--web-workers W]

It starts a private, non-persisting redis-server in a temporary directory, seeds the demo
customers with the argon2 cost production uses, starts the production app under gunicorn on
127.0.0.1 and one real rq worker (`ivr.processes.worker_command`, the same environment, one-time
codes delivered to a development outbox file in the temporary directory), and plays N whole
calls from C threads with the simulator (`CallPlayer` over `HttpTransport`, every request signed
as Twilio signs it). The calls are a fixed mix: PIN successes (to the balance queue),
spoken-passcode successes (to the balance queue), calls that fail twice (wrong PIN, then wrong
passcode) and are sent to the flow's failure route, and SMS step-ups: account number, PIN, "card"
at the main menu, "text message" at the step-up menu, a hold while the worker makes and texts the
code, then the code read from the outbox at the code prompt, into the card-services queue.

Each webhook request is timed around the transport call (loopback HTTP plus everything the
server does; signing is not included) and reported per request kind with p50/p90/p99/max,
against Twilio's 15 s budget. The step-up has three kinds of its own: "code request" (the choice
whose answer puts the caller on hold: the job is queued there), "hold poll" (each
/voice/poll/... after a <Pause>) and "code attempt". For the SMS calls it also reports the
caller's hold, from sending the choice to being asked for the code: that is the worker's latency
as the caller feels it, in steps of the 2 s <Pause> the caller really sits through; and the
delivery time, from the choice to the text landing in the outbox (the worker's own clock).

Send caps: production allows 5 codes per claimed account and per destination per 10 minutes,
and the benchmark texts the same two demo customers over and over. So it sets
IVR_SEND_LIMIT_ACCOUNT and IVR_SEND_LIMIT_DESTINATION to 50, the most the settings accept (a
higher value stops gunicorn at start-up), and IVR_SEND_LIMIT_PREFIX to 100000, and refuses to
start a run that would text one customer more often than that even if all its texts fell into
one send window (--calls 403 or fewer): a capped send must never be what the numbers measure.

Reading the code: each SMS call picks up its own `Phone` on the outbox as it starts and, at the
code prompt, keys in the newest code texted to the phone on file of its customer since the call
started. Two SMS calls for the same customer can overlap, and a text names no call, so that
newest text may be the other call's; each candidate is therefore checked against the digest the
server stored for this call (the benchmark made IVR_CODE_KEY), and a newer text for another call
is skipped and counted in the report. Calls never wait for each other.

Percentiles are nearest-rank. The client threads share the machine's CPUs with gunicorn, the
worker and redis-server, so the numbers include that contention. Everything stops by itself:
calls not yet started when --max-seconds runs out are skipped and reported, and every process the
benchmark started is terminated in a finally block. Exit status 0 means every call ended as
scripted and every request kind's p99 is under the budget.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from redis import Redis
from rq import Worker as RqWorker

from ivr.auth.codes import IssuedCode, country_prefix, matches, otp_purpose
from ivr.devserver import DEMO_CUSTOMERS, DemoCustomer, seed_demo_customers
from ivr.errors import IvrError
from ivr.flows.loader import load_flow
from ivr.flows.schema import CODE_METHODS, AuthenticateStep, Flow, IdentifyStep, MenuStep
from ivr.outbox import Outbox, OutboxMessage
from ivr.processes import web_command, worker_command
from ivr.runtime import connect_redis, make_hasher
from ivr.settings import Settings
from ivr.simulator import (
    CallerInput,
    CallPlayer,
    CallResult,
    Gather,
    HttpTransport,
    Keys,
    Redirect,
    Reply,
    ScriptExhaustedError,
    Speech,
    TwimlError,
    parse_twiml,
)
from ivr.simulator.phone import CODE_IN_TEXT, Phone
from ivr.store.codes import CodeStore
from ivr.store.server import RedisServer, find_free_port, tail

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWS_DIR = REPO_ROOT / "flows"
FLOW_NAME = "default"  # the call scripts below follow flows/default.yaml
SMS_CODE_STEP = "sms_code"  # its step that asks for the texted code
LOOPBACK = "127.0.0.1"

TWILIO_BUDGET_S = 15.0
WEB_START_TIMEOUT_S = 30.0
WORKER_START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
BIND_ATTEMPTS = 3
CODE_READ_TIMEOUT_S = 2.0  # the text is in the outbox before the IVR asks for the code

# Request kinds, in the order the table prints them.
KIND_VOICE = "initial /voice"
KIND_IDENTIFY = "identify"
KIND_MENU = "menu"
KIND_PIN = "pin attempt"
KIND_PASSCODE = "passcode attempt"
KIND_CODE_REQUEST = "code request"
KIND_POLL = "hold poll"
KIND_CODE = "code attempt"
KIND_STATUS = "status callback"
KIND_OTHER = "other"
KINDS = (
    KIND_VOICE,
    KIND_IDENTIFY,
    KIND_MENU,
    KIND_PIN,
    KIND_PASSCODE,
    KIND_CODE_REQUEST,
    KIND_POLL,
    KIND_CODE,
    KIND_STATUS,
)

# A caller ID on file for nobody: calls that type their account number come from here.
UNLISTED_CALLER = "+15005550009"
WRONG_PIN = "246810"
WRONG_PASSCODE = "orange tractor ninety"
FAILURE_ROUTE_TEXT = "could not verify your identity"


def setting_max(field: str) -> int:
    """The largest value `Settings` accepts for `field` (its `le` bound)."""
    for constraint in Settings.model_fields[field].metadata:
        bound = getattr(constraint, "le", None)
        if bound is not None:
            return int(bound)
    raise RuntimeError(f"Settings.{field} has no upper bound")


# Raised so that the benchmark's own repeated texts to the two demo customers never hit a cap;
# as high as the settings allow (a higher value stops gunicorn at start-up).
SEND_CAPS = {
    "IVR_SEND_LIMIT_ACCOUNT": setting_max("send_limit_account"),
    "IVR_SEND_LIMIT_DESTINATION": setting_max("send_limit_destination"),
    "IVR_SEND_LIMIT_PREFIX": min(100_000, setting_max("send_limit_prefix")),
}


# --------------------------------------------------------------------------------------------
# Call scripts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestCode:
    """The menu choice that has a code texted to `phone`, the number on file of `account`.

    The caller's hold starts when it is sent.
    """

    keys: Keys
    account: str
    phone: str


@dataclass(frozen=True)
class CodeFromOutbox:
    """At the code prompt: the newest code texted to `phone` since the call started, then #."""

    phone: str


ScriptItem = Keys | Speech | RequestCode | CodeFromOutbox


@dataclass(frozen=True)
class CallPlan:
    """One call to play: who calls, what they say at each <Gather>, and how it must end."""

    label: str
    from_number: str
    inputs: tuple[ScriptItem, ...]
    expect_outcome: str
    expect_queue: str | None = None
    expect_said: str | None = None

    @property
    def code_requests(self) -> list[RequestCode]:
        return [item for item in self.inputs if isinstance(item, RequestCode)]


def pin_success(demo: DemoCustomer) -> CallPlan:
    """Types the account number, chooses PIN on the keypad, types it, presses 1 (balance)."""
    return CallPlan(
        "pin success",
        UNLISTED_CALLER,
        (Keys(demo.account + "#"), Keys("1"), Keys(demo.pin + "#"), Keys("1")),
        "enqueued",
        expect_queue="balances",
    )


def passcode_success(demo: DemoCustomer) -> CallPlan:
    """Calls from the number on file, uses it (*#), says "passcode", the passcode, "balance"."""
    return CallPlan(
        "passcode success",
        demo.phone,
        (Keys("*#"), Speech("passcode"), Speech(demo.passcode), Speech("balance")),
        "enqueued",
        expect_queue="balances",
    )


def two_failures(demo: DemoCustomer) -> CallPlan:
    """A wrong PIN, then a wrong passcode: the flow's failure route, never a queue."""
    return CallPlan(
        "two failures",
        UNLISTED_CALLER,
        (
            Keys(demo.account + "#"),
            Keys("1"),
            Keys(WRONG_PIN + "#"),
            Keys("2"),
            Speech(WRONG_PASSCODE),
        ),
        "hung_up",
        expect_said=FAILURE_ROUTE_TEXT,
    )


def sms_step_up(demo: DemoCustomer) -> CallPlan:
    """Account number, PIN, 2 (card), 1 (text me a code), hold, the code from the outbox.

    Calls from a number on file for nobody: the code goes to the phone on file, not the caller.
    """
    return CallPlan(
        "sms step-up",
        UNLISTED_CALLER,
        (
            Keys(demo.account + "#"),
            Keys("1"),
            Keys(demo.pin + "#"),
            Keys("2"),
            RequestCode(Keys("1"), demo.account, demo.phone),
            CodeFromOutbox(demo.phone),
        ),
        "enqueued",
        expect_queue="card-services",
    )


MIX: tuple[Callable[[DemoCustomer], CallPlan], ...] = (
    pin_success,
    passcode_success,
    two_failures,
    sms_step_up,
)


def plan_calls(count: int) -> list[CallPlan]:
    """Round-robin over the mix, switching demo customer after each full round.

    Every failure on an account is followed (in submission order) by a success of the same
    factor on that account, so the per-account lockout (10 consecutive failures) never trips
    even with calls overlapping; a trip would show up as unexpected outcomes, not be hidden.
    A longer plan starts with a shorter one.
    """
    return [
        MIX[i % len(MIX)](DEMO_CUSTOMERS[(i // len(MIX)) % len(DEMO_CUSTOMERS)])
        for i in range(count)
    ]


def send_scopes(request: RequestCode) -> list[tuple[str, str]]:
    """What one send counts against, as the server's SendLimiter counts it."""
    return [
        ("IVR_SEND_LIMIT_ACCOUNT", request.account),
        ("IVR_SEND_LIMIT_DESTINATION", request.phone),
        ("IVR_SEND_LIMIT_PREFIX", country_prefix(request.phone)),
    ]


def first_capped_call(plans: Sequence[CallPlan], caps: Mapping[str, int]) -> int | None:
    """Index of the first call whose code request would exceed a send cap, if every send of
    the run fell into one send window (the worst case); None when none would."""
    sends: Counter[tuple[str, str]] = Counter()
    for index, plan in enumerate(plans):
        for request in plan.code_requests:
            for scope in send_scopes(request):
                sends[scope] += 1
                if sends[scope] > caps[scope[0]]:
                    return index
    return None


def most_texts_to_one_customer(plans: Sequence[CallPlan]) -> int:
    counts = Counter(r.phone for plan in plans for r in plan.code_requests)
    return max(counts.values(), default=0)


class ScriptError(Exception):
    """The call did not go where its script expected (reported with the failed calls)."""


class CodeCheck:
    """Tells this call's texted code from another call's to the same phone.

    Two SMS calls for one demo customer overlap under concurrency, and a text carries no call
    reference, so the newest text to the phone on file can be the other call's. The benchmark
    made IVR_CODE_KEY, so it can check a code from the outbox against the digest stored for this
    call (what the code attempt will check) before keying it in: a caller would see two texts
    and know which call asked for which.
    """

    def __init__(self, redis: Redis, key: str) -> None:
        self.store = CodeStore(redis)
        self.key = key

    def issued_to(self, call_sid: str, method: str, to: str, code: str) -> bool:
        issued = self.store.otp(call_sid, method)
        record = self.store.delivery_record(call_sid, method)  # the claim it was sent for
        purpose = otp_purpose(call_sid, method, record.claim if record else "", to)
        return isinstance(issued, IssuedCode) and matches(self.key, purpose, code, issued.digest)


class CallerScript:
    """The caller of one call: answers each <Gather> with the plan's next item.

    Keys and Speech are answered as they are. `RequestCode` starts the hold clock.
    `CodeFromOutbox` stops it, checks this is the code prompt, and keys in the newest code
    texted to the phone on file since the call started (read through this call's own `Phone`)
    that was issued to this call.
    """

    def __init__(
        self,
        plan: CallPlan,
        call_sid: str,
        outbox: Outbox,
        code_check: CodeCheck,
        code_step: str,
    ) -> None:
        self.inputs = plan.inputs
        self.call_sid = call_sid
        self.code_check = code_check
        self.code_step = code_step
        self.started_at = time.time()  # wall clock, comparable with OutboxMessage.at
        self.phone = Phone(outbox)  # picked up as the call starts
        self.hold_seconds: float | None = None  # choice sent -> code prompt
        self.delivery_seconds: float | None = None  # choice sent -> text in the outbox
        self.skipped_texts = 0  # newer texts to the same phone, for another call
        self._next = 0
        self._chose_at = 0.0  # wall clock
        self._chose_perf: float | None = None
        self._received: list[OutboxMessage] = []

    @property
    def remaining(self) -> tuple[ScriptItem, ...]:
        return self.inputs[self._next :]

    def __call__(self, gather: Gather, heard_so_far: list[str]) -> CallerInput | None:
        if self._next >= len(self.inputs):
            last = heard_so_far[-1] if heard_so_far else "(nothing)"
            raise ScriptExhaustedError(
                f"the IVR asked for input #{self._next + 1} but only {len(self.inputs)} "
                f"scripted; it last said: {last!r}"
            )
        item = self.inputs[self._next]
        self._next += 1
        if isinstance(item, RequestCode):
            self._chose_perf = time.perf_counter()
            self._chose_at = time.time()
            return item.keys
        if isinstance(item, CodeFromOutbox):
            return self._key_in_code(item, gather, heard_so_far)
        return item

    def _key_in_code(self, item: CodeFromOutbox, gather: Gather, heard: list[str]) -> Keys:
        if urlsplit(gather.action or "").path.rstrip("/") != f"/voice/step/{self.code_step}":
            last = heard[-1] if heard else "(nothing)"
            raise ScriptError(f"expected the code prompt ({self.code_step}), heard {last!r}")
        if self._chose_perf is not None:
            self.hold_seconds = time.perf_counter() - self._chose_perf
        deadline = time.monotonic() + CODE_READ_TIMEOUT_S
        while True:
            found = self._newest_code(item.phone)
            if found is not None:
                code, sent_at = found
                self.delivery_seconds = sent_at - self._chose_at
                return Keys(code + "#")
            if time.monotonic() >= deadline:
                raise ScriptError(f"no code for this call texted to {item.phone}")
            time.sleep(0.05)

    def _newest_code(self, to: str) -> tuple[str, float] | None:
        """(code, sent at) of the newest text to `to` since the call started that was issued
        to this call."""
        self._received.extend(self.phone.arrivals())
        skipped = 0
        for message in reversed(self._received):
            if message.channel != "sms" or message.to != to or message.at < self.started_at:
                continue
            found = CODE_IN_TEXT.search(message.body)
            if found is None:
                continue
            if self.code_check.issued_to(self.call_sid, "sms_otp", to, found.group(1)):
                self.skipped_texts = skipped
                return found.group(1), message.at
            skipped += 1
        return None


def check_call(plan: CallPlan, result: CallResult, script: CallerScript) -> str | None:
    """None if the call ended as planned, else why not."""
    if result.outcome != plan.expect_outcome:
        detail = f" ({result.error})" if result.error else ""
        return f"outcome {result.outcome!r}{detail}, expected {plan.expect_outcome!r}"
    if plan.expect_queue is not None and result.queue != plan.expect_queue:
        return f"queue {result.queue!r}, expected {plan.expect_queue!r}"
    if plan.expect_said is not None and not result.said(plan.expect_said):
        return f"never heard {plan.expect_said!r}"
    if script.remaining:
        return f"{len(script.remaining)} scripted inputs were never asked for"
    status = result.status_callback
    if status is None or status.status != 204:
        return f"status callback answered {status.status if status else 'nothing'}, not 204"
    return None


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    kind: str
    seconds: float
    status: int  # 0: no HTTP answer at all


def request_kinds(flow: Flow) -> dict[str, str]:
    """Step id -> request kind, for the /voice/step/<id> URLs the flow's gathers post to."""
    kinds: dict[str, str] = {}
    for step_id, step in flow.steps.items():
        if isinstance(step, IdentifyStep):
            kinds[step_id] = KIND_IDENTIFY
        elif isinstance(step, MenuStep):
            kinds[step_id] = KIND_MENU
        elif isinstance(step, AuthenticateStep):
            if step.method == "pin":
                kinds[step_id] = KIND_PIN
            elif step.method == "passcode":
                kinds[step_id] = KIND_PASSCODE
            elif step.method in (*CODE_METHODS, "service_code"):
                kinds[step_id] = KIND_CODE
    return kinds


def puts_on_hold(reply: Reply) -> bool:
    """Whether the answer holds the caller: <Pause> then <Redirect> to /voice/poll/<step>."""
    if reply.status != 200:
        return False
    try:
        verbs = parse_twiml(reply.body)
    except TwimlError:
        return False
    return any(
        isinstance(verb, Redirect) and urlsplit(verb.url).path.startswith("/voice/poll/")
        for verb in verbs
    )


class TimedTransport:
    """Wraps a transport and records how long each webhook request took, by request kind.

    A /voice/step/ request whose answer puts the caller on hold is a "code request" whatever
    step it answered: that request queued the delivery job.
    """

    def __init__(self, inner: HttpTransport, step_kinds: dict[str, str]) -> None:
        self.inner = inner
        self.step_kinds = step_kinds
        self.samples: list[Sample] = []
        self._lock = threading.Lock()

    def classify(self, url: str) -> str:
        path = urlsplit(url).path.rstrip("/")
        if path == "/voice":
            return KIND_VOICE
        if path == "/voice/status":
            return KIND_STATUS
        if path.startswith("/voice/poll/"):
            return KIND_POLL
        prefix = "/voice/step/"
        if path.startswith(prefix):
            return self.step_kinds.get(path[len(prefix) :], KIND_OTHER)
        return KIND_OTHER

    def _timed(self, url: str, send: Callable[[], Reply]) -> Reply:
        kind = self.classify(url)
        reply: Reply | None = None
        started = time.perf_counter()
        try:
            reply = send()
            return reply
        finally:
            seconds = time.perf_counter() - started
            status = reply.status if reply is not None else 0
            if (
                reply is not None
                and urlsplit(url).path.startswith("/voice/step/")
                and puts_on_hold(reply)
            ):
                kind = KIND_CODE_REQUEST
            with self._lock:
                self.samples.append(Sample(kind, seconds, status))

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        return self._timed(url, lambda: self.inner.post(url, params, headers))

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        return self._timed(url, lambda: self.inner.get(url, headers))


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (the value at rank ceil(pct% * n))."""
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil without floats going astray
    return sorted_values[int(rank) - 1]


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def spawn(
    argv: list[str], env: dict[str, str], workdir: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=workdir,  # no stray .env: settings come from `env` alone
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, so its children can be killed with it
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful), then SIGKILL the whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # Not reaped yet, so the group id is still ours.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class WebServer:
    """gunicorn with the production app on a free loopback port, logging to a file."""

    def __init__(self, workers: int, env: dict[str, str], workdir: Path) -> None:
        self.workers = workers
        self.env = env
        self.workdir = workdir
        self.port = 0
        self.log_path = workdir / "gunicorn.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        for attempt in range(1, BIND_ATTEMPTS + 1):
            self.port = find_free_port()
            argv = web_command(f"{LOOPBACK}:{self.port}", self.workers)
            self._proc = spawn(argv, self.env, self.workdir, self.log_path)
            try:
                self._wait_ready()
                return
            except RuntimeError:
                self.stop()
                if attempt < BIND_ATTEMPTS and "Address already in use" in tail(self.log_path):
                    continue
                raise

    def _wait_ready(self) -> None:
        """Until a worker answers HTTP (any status): TCP alone only proves the master bound."""
        assert self._proc is not None
        deadline = time.monotonic() + WEB_START_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited with code {self._proc.returncode} at start-up; "
                    f"log:\n{tail(self.log_path)}"
                )
            conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=2)
            try:
                conn.request("GET", "/", headers={"User-Agent": "ivr-bench-ready-probe"})
                conn.getresponse().read()
                return
            except (OSError, http.client.HTTPException) as exc:
                last_error = exc
            finally:
                conn.close()
            time.sleep(0.1)
        raise RuntimeError(
            f"gunicorn did not answer on {self.base_url} within {WEB_START_TIMEOUT_S:g} s "
            f"(last error: {last_error}); log:\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)


class QueueWorker:
    """One real rq worker (with the scheduler) on the ivr queue, logging to a file."""

    def __init__(self, redis_url: str, env: dict[str, str], workdir: Path) -> None:
        self.redis_url = redis_url
        self.env = env
        self.workdir = workdir
        self.name = f"ivr-bench-{secrets.token_hex(6)}"
        self.log_path = workdir / "worker.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        argv = worker_command(self.redis_url, "--name", self.name)
        self._proc = spawn(argv, self.env, self.workdir, self.log_path)
        try:
            self._wait_registered()
        except RuntimeError:
            self.stop()
            raise

    def _wait_registered(self) -> None:
        """Until the worker has registered in Redis: the first call must not wait for its boot."""
        assert self._proc is not None
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        redis = connect_redis(self.redis_url)
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"rq worker exited with code {self._proc.returncode} at start-up; "
                        f"log:\n{tail(self.log_path)}"
                    )
                if any(w.name == self.name for w in RqWorker.all(connection=redis)):
                    return
                time.sleep(0.1)
        finally:
            redis.close()
        raise RuntimeError(
            f"rq worker {self.name} did not register within {WORKER_START_TIMEOUT_S:g} s; "
            f"log:\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)


def service_env(redis_url: str, auth_token: str, code_key: str, outbox: Path) -> dict[str, str]:
    """The environment of both gunicorn and the worker."""
    env = dict(os.environ)
    # The calls are signed for the loopback URL and scripted for the default flow; codes go to
    # this run's outbox, whatever backends the shell running the benchmark is configured with.
    for name in ("IVR_PUBLIC_URL", "IVR_SMS_BACKEND", "IVR_EMAIL_BACKEND", "IVR_CALL_BACKEND"):
        env.pop(name, None)
    env.update(
        {
            "REDIS_URL": redis_url,
            "TWILIO_AUTH_TOKEN": auth_token,
            "IVR_FLOWS_DIR": str(FLOWS_DIR),
            "IVR_FLOW": FLOW_NAME,
            "IVR_CODE_KEY": code_key,  # the default flow offers one-time codes
            "IVR_OUTBOX": str(outbox),
            **{name: str(cap) for name, cap in SEND_CAPS.items()},
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """One SMS call's wait for its code, in seconds."""

    hold: float  # choice sent -> asked for the code (what the caller sits through)
    delivery: float  # choice sent -> text in the outbox (the worker's clock)
    skipped_texts: int  # newer texts to the same phone, sent for another call


@dataclass
class RunResult:
    samples: list[Sample]
    wall_seconds: float
    played: int
    skipped: int
    failures: list[tuple[int, CallPlan, str, CallResult | None]]
    holds: list[Hold]


def play_calls(
    plans: list[CallPlan],
    concurrency: int,
    base_url: str,
    auth_token: str,
    transport: TimedTransport,
    outbox: Outbox,
    code_check: CodeCheck,
    max_seconds: float,
) -> RunResult:
    deadline = time.monotonic() + max_seconds
    stop = threading.Event()
    failures: list[tuple[int, CallPlan, str, CallResult | None]] = []
    holds: list[Hold] = []
    lock = threading.Lock()

    def one_call(index: int, plan: CallPlan) -> bool:
        if stop.is_set() or time.monotonic() > deadline:
            return False
        # pause_scale 1: a caller on hold really waits out each <Pause>, as on a phone.
        player = CallPlayer(
            transport, base_url, auth_token, from_number=plan.from_number, pause_scale=1.0
        )
        script = CallerScript(plan, player.call_sid, outbox, code_check, SMS_CODE_STEP)
        result: CallResult | None = None
        try:
            result = player.play(script)
            problem = check_call(plan, result, script)
        except Exception as exc:  # a script error: report it with the others
            problem = f"{type(exc).__name__}: {exc}"
        with lock:
            if problem is not None:
                failures.append((index, plan, problem, result))
            elif script.hold_seconds is not None and script.delivery_seconds is not None:
                holds.append(
                    Hold(script.hold_seconds, script.delivery_seconds, script.skipped_texts)
                )
        return True

    started = time.perf_counter()
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="caller")
    futures: list[Future[bool]] = []
    try:
        futures = [executor.submit(one_call, i, plan) for i, plan in enumerate(plans)]
        played = sum(1 for future in futures if future.result())
    finally:
        stop.set()
        executor.shutdown(wait=True, cancel_futures=True)
    wall = time.perf_counter() - started
    return RunResult(transport.samples, wall, played, len(plans) - played, failures, holds)


def header(
    args: argparse.Namespace,
    settings: Settings,
    redis_version: str,
    plans: Sequence[CallPlan],
) -> list[str]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 0
    caps = " ".join(f"{name}={cap}" for name, cap in SEND_CAPS.items())
    return [
        "secure-ivr webhook benchmark (SECURITY.md item 4)",
        f"python      {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        f"platform    {platform.platform()}; machine {platform.machine()}; "
        f"cpu {cpu_model() or platform.processor() or '?'}",
        f"cpus        os.cpu_count()={os.cpu_count()}, usable by this process={affinity}",
        f"servers     gunicorn {package_version('gunicorn')} --workers {args.web_workers} "
        f"(sync) on {LOOPBACK}; 1 rq {package_version('rq')} worker --with-scheduler; "
        f"redis-server {redis_version} (private, no persistence)",
        f"argon2id    time_cost={settings.argon2_time_cost} "
        f"memory={settings.argon2_memory_kib} KiB parallelism=1 "
        f"pepper={'yes' if settings.pepper else 'no'}",
        f"send caps   {caps} per window (production: 5, 5, 200), raised so that the "
        f"benchmark's repeated texts to the same demo customer cannot trip them; this run "
        f"sends at most {most_texts_to_one_customer(plans)} codes to one customer",
        f"load        {args.calls} calls from {args.concurrency} threads; mix: "
        + ", ".join(make(DEMO_CUSTOMERS[0]).label for make in MIX)
        + f" (flow {FLOW_NAME}); callers on hold really wait out each <Pause>",
    ]


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def spread(seconds: Sequence[float]) -> str:
    """p50/p90/p99/max of durations, in seconds."""
    values = sorted(seconds)
    return "p50 {:.2f} s, p90 {:.2f} s, p99 {:.2f} s, max {:.2f} s".format(
        *(percentile(values, pct) for pct in (50, 90, 99)), values[-1]
    )


def report(run: RunResult, concurrency: int) -> tuple[list[str], bool]:
    """The table and summary lines, and whether the budget was met by every kind."""
    by_kind: dict[str, list[Sample]] = {}
    for sample in run.samples:
        by_kind.setdefault(sample.kind, []).append(sample)
    order = [k for k in (*KINDS, KIND_OTHER) if k in by_kind]
    rows = [(kind, by_kind[kind]) for kind in order]
    rows.append(("overall", run.samples))

    lines = [
        f"{'request kind':<18}{'count':>7}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}"
        f"{'max ms':>10}{'non-2xx':>9}",
        "-" * 74,
    ]
    worst_p99 = 0.0
    worst_kind = "-"
    for kind, samples in rows:
        if not samples:
            continue
        if kind == "overall":
            lines.append("-" * 74)
        ms = sorted(s.seconds * 1000 for s in samples)
        p99 = percentile(ms, 99)
        if kind != "overall" and p99 > worst_p99:
            worst_p99, worst_kind = p99, kind
        bad = sum(1 for s in samples if s.status not in (200, 204))
        lines.append(
            f"{kind:<18}{len(ms):>7}{percentile(ms, 50):>10.1f}{percentile(ms, 90):>10.1f}"
            f"{p99:>10.1f}{ms[-1]:>10.1f}{bad:>9}"
        )

    total = len(run.samples)
    lines.append("")
    lines.append(
        f"{run.played} calls ({total} webhook requests) in {run.wall_seconds:.2f} s with "
        f"{concurrency} threads: {run.played / run.wall_seconds:.2f} calls/s, "
        f"{total / run.wall_seconds:.1f} requests/s (SMS callers on hold included)"
        if run.wall_seconds > 0
        else f"{run.played} calls"
    )
    if run.skipped:
        lines.append(f"{run.skipped} calls skipped: --max-seconds ran out or interrupted")
    if run.failures:
        lines.append(f"{len(run.failures)} calls did NOT end as scripted, e.g.:")
        for index, plan, problem, result in sorted(run.failures, key=lambda f: f[0])[:5]:
            last = result.heard[-1] if result and result.heard else "(nothing)"
            lines.append(f"  call #{index} ({plan.label}): {problem}; last heard {last!r}")
    else:
        lines.append(f"all {run.played} calls ended as scripted (queue or failure route)")

    if run.holds:
        lines.append(
            f"sms hold, choice sent -> code prompt ({len(run.holds)} calls): "
            f"{spread([h.hold for h in run.holds])}"
        )
        lines.append(
            f"sms delivery, choice sent -> text in the outbox: "
            f"{spread([h.delivery for h in run.holds])} (the hold is this rounded up to a "
            f"whole number of <Pause>s between polls)"
        )
        overtaken = sum(1 for h in run.holds if h.skipped_texts)
        if overtaken:
            lines.append(
                f"  {overtaken} SMS calls overlapped another call to the same phone whose text "
                f"was newer; they keyed in their own code (checked against its stored digest)"
            )

    worst_max = max((s.seconds for s in run.samples), default=0.0) * 1000
    budget_ms = TWILIO_BUDGET_S * 1000
    within = bool(run.samples) and worst_p99 < budget_ms
    lines.append(
        f"Twilio budget {TWILIO_BUDGET_S:g} s: every request kind's p99 is "
        f"{'UNDER' if within else 'NOT under'} it -- worst p99 {worst_p99:.1f} ms "
        f"({worst_kind}) = {worst_p99 / budget_ms:.2%} of the budget; "
        f"slowest single request {worst_max:.1f} ms = {worst_max / budget_ms:.2%}"
    )
    return lines, within


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        return value

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=positive, default=200, help="whole calls (default 200)")
    parser.add_argument(
        "--concurrency", type=positive, default=4, help="caller threads (default 4)"
    )
    parser.add_argument(
        "--web-workers", type=positive, default=2, help="gunicorn workers (default 2, as Procfile)"
    )
    parser.add_argument(
        "--max-seconds",
        type=positive,
        default=900,
        help="stop starting new calls after this long (default 900)",
    )
    args = parser.parse_args(argv)
    capped = first_capped_call(plan_calls(args.calls), SEND_CAPS)
    if capped is not None:
        parser.error(
            f"--calls {args.calls} would text one demo customer more often than the send caps "
            f"allow within one window ({', '.join(f'{n}={c}' for n, c in SEND_CAPS.items())}, "
            f"the most the settings accept); use --calls {capped} or fewer"
        )
    return args


def check_flow(flow: Flow) -> None:
    """The scripts follow flows/default.yaml: fail fast, not with N failed calls, if it moved."""
    step = flow.steps.get(SMS_CODE_STEP)
    if not (isinstance(step, AuthenticateStep) and step.method == "sms_otp"):
        raise RuntimeError(
            f"flow {FLOW_NAME!r} has no sms_otp step {SMS_CODE_STEP!r}; update the call scripts"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plans = plan_calls(args.calls)
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    redis_server: RedisServer | None = None
    web: WebServer | None = None
    worker: QueueWorker | None = None
    redis: Redis | None = None
    with tempfile.TemporaryDirectory(prefix="ivr-bench-") as tmp:
        workdir = Path(tmp)
        try:
            flow = load_flow(FLOWS_DIR / f"{FLOW_NAME}.yaml")
            check_flow(flow)
            redis_server = RedisServer(workdir / "redis", persist=False)
            redis_url = redis_server.start()
            auth_token = secrets.token_hex(16)
            outbox_path = workdir / "outbox.jsonl"
            code_key = secrets.token_hex(16)
            env = service_env(redis_url, auth_token, code_key, outbox_path)
            # Same source as the web process (environment only, no .env), so the demo secrets
            # are hashed with the pepper and argon2 cost the web process verifies with.
            settings = Settings(_env_file=None, redis_url=redis_url)  # type: ignore[call-arg]
            redis = connect_redis(redis_url)
            seed_demo_customers(redis, make_hasher(settings))
            redis_version = str(redis.info("server").get("redis_version", "?"))

            for line in header(args, settings, redis_version, plans):
                print(line)

            web = WebServer(args.web_workers, env, workdir)
            web.start()
            print(f"serving     {web.base_url} (gunicorn master pid {web.pid})")
            worker = QueueWorker(redis_url, env, workdir)
            worker.start()
            print(f"worker      {worker.name} (pid {worker.pid}); codes to {outbox_path}")
            print(flush=True)

            transport = TimedTransport(HttpTransport(), request_kinds(flow))
            run = play_calls(
                plans,
                args.concurrency,
                web.base_url,
                auth_token,
                transport,
                Outbox(outbox_path),
                CodeCheck(redis, code_key),
                args.max_seconds,
            )
            lines, within = report(run, args.concurrency)
            print("\n".join(lines))
            if run.failures:
                print(f"\ngunicorn log tail:\n{tail(web.log_path, 20)}")
                print(f"\nworker log tail:\n{tail(worker.log_path, 20)}")
            return 0 if within and not run.failures and not run.skipped else 1
        except KeyboardInterrupt:
            print("interrupted; stopping the servers", file=sys.stderr)
            return 130
        except (RuntimeError, OSError, IvrError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 2
        finally:
            if redis is not None:
                redis.close()
            if worker is not None:
                worker.stop()
            if web is not None:
                web.stop()
            if redis_server is not None:
                redis_server.stop()
            signal.signal(signal.SIGTERM, previous_sigterm)


if __name__ == "__main__":
    sys.exit(main())
