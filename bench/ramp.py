"""One step of the realistic ramp: `lines` callers, each playing call after call at a person's
pace, started over `ramp` seconds, held for `steady` seconds, then let finish.

Every call has a customer and calling number of its own (bench.plans), enrolled before the
step starts, so nothing a call does counts against another's limits. What the report needs is
taken here: every request (bench.loopback), every call's end, each SMS call's hold, the live
calls and Redis's memory each second, and the services' CPU at the step's start, at the steady
window's edges and at its end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field

from redis import Redis

from bench.caller_time import CallerTime
from bench.calls import CallerScript, Hold, check_call
from bench.loopback import LoopbackTransport, Recorder, Timed
from bench.plans import CallPlan, seed_customers
from bench.procstat import own_cpu, tree_cpu
from bench.texts import Texts
from ivr.auth.knowledge import SecretHasher
from ivr.runtime import connect_redis
from ivr.simulator import CallPlayer

MIN_CALL_SECONDS = 20.0  # no scripted call is this short for a person (the shortest is ~40 s)
THREAD_STACK = 512 * 1024  # thousands of mostly sleeping callers


@dataclass(frozen=True)
class Pacing:
    lines: int
    ramp: float
    steady: float
    drain: float  # longest wait for the last calls to end
    caller_time: CallerTime


@dataclass(frozen=True)
class Cpu:
    """CPU seconds so far: the services' process trees, Redis, this load generator."""

    at: float
    web: float
    worker: float
    redis: float
    generator: float

    def minus(self, start: Cpu) -> Cpu:
        return Cpu(
            self.at - start.at,
            self.web - start.web,
            self.worker - start.worker,
            self.redis - start.redis,
            self.generator - start.generator,
        )


@dataclass(frozen=True)
class Sample:
    at: float
    live: int
    ended: int  # calls ended so far in this step
    used_memory: int


@dataclass(frozen=True)
class Ended:
    plan: CallPlan
    started: float
    problem: str | None
    hold: Hold | None
    chose_at: float | None  # monotonic, when an SMS caller chose the text


@dataclass
class StepResult:
    pacing: Pacing
    window: tuple[float, float]
    cpu_step: Cpu  # start of the step -> last call ended
    cpu_window: Cpu  # the steady window alone
    memory_before: int
    memory_after: int
    requests: list[Timed]
    calls: list[Ended]
    samples: list[Sample]
    texts: int
    starved: int  # callers that ran out of enrolled customers: the bound below was wrong
    unfinished: int  # calls still going when the drain ran out
    failures: list[str] = field(default_factory=list)

    def in_window(self) -> list[Timed]:
        return [t for t in self.requests if self.window[0] <= t.done < self.window[1]]


class Target:
    """What a step drives and watches (bench.stack's processes, from this side)."""

    def __init__(self, base_url: str, auth_token: str, redis_url: str, pids: tuple[int, int]):
        self.base_url, self.auth_token, self.redis_url = base_url, auth_token, redis_url
        self.web_pid, self.worker_pid = pids

    def cpu(self, redis: Redis) -> Cpu:
        info = redis.info("cpu")
        return Cpu(
            time.monotonic(),
            tree_cpu(self.web_pid),
            tree_cpu(self.worker_pid),
            float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            own_cpu(),
        )


def idle_rates(target: Target, seconds: float) -> Cpu:
    """CPU seconds per second the services spend with no call at all (gunicorn's and rq's own
    loops), to leave out of the per-webhook and per-text figures."""
    with closing(connect_redis(target.redis_url)) as redis:
        start = target.cpu(redis)
        time.sleep(seconds)
        spent = target.cpu(redis).minus(start)
    return Cpu(1.0, spent.web / spent.at, spent.worker / spent.at, spent.redis / spent.at, 0.0)


def run_step(
    services: Target,
    pacing: Pacing,
    plans: list[CallPlan],
    hasher: SecretHasher,
    texts: Texts,
    recorder: Recorder,
) -> StepResult:
    with closing(connect_redis(services.redis_url)) as redis:
        seed_customers(redis, hasher, plans)
        return _Step(services, pacing, plans, texts, recorder).run(redis)


class _Step:
    def __init__(
        self,
        services: Target,
        pacing: Pacing,
        plans: list[CallPlan],
        texts: Texts,
        recorder: Recorder,
    ) -> None:
        self.services, self.pacing, self.texts, self.recorder = services, pacing, texts, recorder
        self.transport = LoopbackTransport(recorder)
        self._plans: Iterator[CallPlan] = iter(plans)
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.live = 0
        self.ended: list[Ended] = []
        self.starved = 0

    def run(self, redis: Redis) -> StepResult:
        pacing = self.pacing
        texts_before = self.texts.refresh()
        memory_before = int(redis.info("memory")["used_memory"])
        cpu_start = self.services.cpu(redis)
        previous_stack = threading.stack_size(THREAD_STACK)
        try:
            callers = [
                threading.Thread(target=self._line, args=(i * pacing.ramp / pacing.lines,))
                for i in range(pacing.lines)
            ]
        finally:
            threading.stack_size(previous_stack)
        for caller in callers:
            caller.daemon = True  # an interrupt must not wait for thousands of sleepers
            caller.start()
        samples: list[Sample] = []
        try:
            time.sleep(pacing.ramp)
            cpu_w0 = self.services.cpu(redis)
            window_end = cpu_w0.at + pacing.steady
            while (now := time.monotonic()) < window_end:
                samples.append(
                    Sample(
                        now, self.live, len(self.ended), int(redis.info("memory")["used_memory"])
                    )
                )
                time.sleep(min(1.0, max(0.0, window_end - time.monotonic())))
            cpu_w1 = self.services.cpu(redis)
        finally:
            self.stop.set()
        deadline = time.monotonic() + pacing.drain
        for caller in callers:
            caller.join(timeout=max(0.0, deadline - time.monotonic()))
        unfinished = self.live
        time.sleep(0.2)  # the last texts' lines reach the outbox
        cpu_end = self.services.cpu(redis)
        return StepResult(
            pacing,
            (cpu_w0.at, cpu_w1.at),
            cpu_end.minus(cpu_start),
            cpu_w1.minus(cpu_w0),
            memory_before,
            int(redis.info("memory")["used_memory"]),
            [t for t in self.recorder.timed if t.done >= cpu_start.at],
            list(self.ended),
            samples,
            self.texts.refresh() - texts_before,
            self.starved,
            unfinished,
        )

    def _line(self, delay: float) -> None:
        """One caller's line: a call, hang up, the next customer's call, until told to stop."""
        if self.stop.wait(delay):
            return
        while not self.stop.is_set():
            with self._lock:
                plan = next(self._plans, None)
                if plan is None:
                    self.starved += 1
                    return
                self.live += 1
            try:
                ended = self._call(plan)
            finally:
                with self._lock:
                    self.live -= 1
            self.ended.append(ended)

    def _call(self, plan: CallPlan) -> Ended:
        person = self.pacing.caller_time.caller()
        player = CallPlayer(
            self.transport,
            self.services.base_url,
            self.services.auth_token,
            from_number=plan.from_number,
            observer=person.observe,
            pause_scale=1.0,  # a caller on hold waits out each <Pause>, as on a phone
        )
        script = CallerScript(plan, self.texts, person.pace, person.listened_seconds)
        started = time.monotonic()
        try:
            problem = check_call(plan, player.play(script), script)
        except Exception as exc:  # a script error: report it with the others
            problem = f"{type(exc).__name__}: {exc}"
        hold = None
        if script.hold_seconds is not None and script.delivery_seconds is not None:
            hold = Hold(script.hold_seconds, script.delivery_seconds)
        return Ended(plan, started, problem, hold, script.chose_monotonic)
