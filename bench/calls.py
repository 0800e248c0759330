"""Playing the planned calls from several threads, and checking each ended as scripted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.plans import SMS_CODE_STEP, CallPlan, CodeFromOutbox, RequestCode, ScriptItem
from bench.texts import Texts
from ivr.simulator import (
    CallerInput,
    CallPlayer,
    CallResult,
    Gather,
    HttpTransport,
    Keys,
    ScriptExhaustedError,
    Sent,
    TimedTransport,
)

CODE_READ_TIMEOUT_S = 2.0  # the text is in the outbox before the IVR asks for the code


class ScriptError(Exception):
    """The call did not go where its script expected (reported with the failed calls)."""


class CallerScript:
    """The caller of one call: answers each <Gather> with the plan's next item.

    `RequestCode` starts the hold clock; `CodeFromOutbox` stops it and keys in the newest code
    texted to the phone since the call started. The phone is this call's customer's alone, so
    that text is this call's code: the benchmark needs no knowledge of how codes rest.

    `pace(answer)` runs just before each answer goes back (a realistic caller takes time to
    answer: bench.caller_time), outside the hold clock; `listened()` is the caller's time spent
    hearing prompts so far, which the hold leaves out (the hold prompt is not silence).
    """

    def __init__(
        self,
        plan: CallPlan,
        texts: Texts,
        pace: Callable[[CallerInput], None] = lambda answer: None,
        listened: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.inputs = plan.inputs
        self.texts = texts
        self.pace = pace
        self.listened = listened
        self.started_at = time.time()  # wall clock, comparable with OutboxMessage.at
        self.hold_seconds: float | None = None  # choice sent -> code prompt
        self.delivery_seconds: float | None = None  # choice sent -> text in the outbox
        self._next = 0
        self._chose_at = 0.0  # wall clock
        self._chose_perf: float | None = None
        self._chose_listened = 0.0
        self.chose_monotonic: float | None = None  # when an SMS caller chose the text

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
            self.pace(item.keys)
            self._chose_perf = time.perf_counter()
            self._chose_at = time.time()
            self._chose_listened = self.listened()
            self.chose_monotonic = time.monotonic()
            return item.keys
        if isinstance(item, CodeFromOutbox):
            keys = self._key_in_code(item.phone, gather, heard_so_far)
            self.pace(keys)
            return keys
        self.pace(item)
        return item

    def _key_in_code(self, phone: str, gather: Gather, heard: list[str]) -> Keys:
        if urlsplit(gather.action or "").path.rstrip("/") != f"/voice/step/{SMS_CODE_STEP}":
            last = heard[-1] if heard else "(nothing)"
            raise ScriptError(f"expected the code prompt ({SMS_CODE_STEP}), heard {last!r}")
        if self._chose_perf is not None:
            listening = self.listened() - self._chose_listened
            self.hold_seconds = time.perf_counter() - self._chose_perf - listening
        deadline = time.monotonic() + CODE_READ_TIMEOUT_S
        while (found := self.texts.newest_code(phone, self.started_at)) is None:
            if time.monotonic() >= deadline:
                raise ScriptError(f"no code texted to {phone} since the call started")
            time.sleep(0.05)
        code, sent_at = found
        self.delivery_seconds = sent_at - self._chose_at
        return Keys(code + "#")


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


@dataclass(frozen=True)
class Hold:
    """One SMS call's wait for its code, in seconds."""

    hold: float  # choice sent -> asked for the code (what the caller sits through)
    delivery: float  # choice sent -> text in the outbox (the worker's clock)


@dataclass(frozen=True)
class Failure:
    index: int
    plan: CallPlan
    problem: str
    result: CallResult | None


@dataclass(frozen=True)
class RunResult:
    sent: list[Sent]
    wall_seconds: float
    played: int
    skipped: int
    failures: list[Failure]
    holds: list[Hold]


def play_calls(
    plans: list[CallPlan],
    concurrency: int,
    base_url: str,
    auth_token: str,
    texts: Texts,
    max_seconds: float,
) -> RunResult:
    """Calls not yet started when `max_seconds` runs out (or on an interrupt) are skipped."""
    transport = TimedTransport(HttpTransport())
    deadline = time.monotonic() + max_seconds
    stop = threading.Event()
    failures: list[Failure] = []
    holds: list[Hold] = []
    lock = threading.Lock()

    def one_call(index: int, plan: CallPlan) -> bool:
        if stop.is_set() or time.monotonic() > deadline:
            return False
        # pause_scale 1: a caller on hold really waits out each <Pause>, as on a phone.
        player = CallPlayer(
            transport, base_url, auth_token, from_number=plan.from_number, pause_scale=1.0
        )
        script = CallerScript(plan, texts)
        result: CallResult | None = None
        try:
            result = player.play(script)
            problem = check_call(plan, result, script)
        except Exception as exc:  # a script error: report it with the others
            problem = f"{type(exc).__name__}: {exc}"
        with lock:
            if problem is not None:
                failures.append(Failure(index, plan, problem, result))
            elif script.hold_seconds is not None and script.delivery_seconds is not None:
                holds.append(Hold(script.hold_seconds, script.delivery_seconds))
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
    failures.sort(key=lambda failure: failure.index)
    return RunResult(transport.sent, wall, played, len(plans) - played, failures, holds)
