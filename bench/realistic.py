"""`python -m bench realistic`: how many concurrent calls of people one machine holds.

Starts the Procfile's processes (`ivr serve`, `ivr worker`) on a private redis-server, then
ramps: each step keeps N callers busy, call after call, each at a person's pace
(bench.caller_time), and stops at the first step where a webhook kind's p99 passes the limit or
a call does not end as scripted. See bench/README.md.
"""

from __future__ import annotations

import math
import os
import platform
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click
from redis.exceptions import RedisError

from bench import kinds
from bench.caller_time import KEY_SECONDS, CallerTime
from bench.capacity import step_lines, summarise, summary_lines
from bench.cli import EXIT_INTERRUPTED, failed
from bench.loopback import Recorder
from bench.plans import FLOW_NAME, MIX, CallPlan, check_flow, parse_mix, plan_calls
from bench.ramp import MIN_CALL_SECONDS, Pacing, Target, idle_rates, run_step
from bench.report import cpu_model, package_version
from bench.stack import FLOWS_DIR, procfile_services
from bench.texts import Texts
from ivr.auth.knowledge import SecretHasher
from ivr.errors import IvrError, SettingsError
from ivr.flows.caller_time import ANSWER_SECONDS, WORDS_PER_MINUTE
from ivr.flows.loader import load_flow
from ivr.runtime import make_hasher
from ivr.settings import Settings, environment_settings

DEFAULT_STEPS = "250,500,750,1000,1250,1500,2000,2500,3000,3500,4000"
# Every benchmark phone is +1 and one call in four fails twice by design: the per-prefix send
# cap and the global failure alert would otherwise be what a long run measures.
LIMITS_RAISED = {"IVR_SEND_LIMIT_PREFIX": "100000", "IVR_ABUSE_GLOBAL_FAILURES": "1000000"}
IDLE_SECONDS, QUICK_IDLE_SECONDS = 10.0, 3.0


def _steps(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        steps = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter("a comma-separated list of caller counts") from None
    if not steps or min(steps) < 1 or steps != sorted(steps):
        raise click.BadParameter("caller counts, at least 1, in increasing order")
    return steps


@click.command()
@click.option(
    "--steps", default=DEFAULT_STEPS, show_default=True, callback=_steps, help="callers per step"
)
@click.option(
    "--ramp",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="seconds over which a step's callers start",
)
@click.option(
    "--steady",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="seconds measured once all have started",
)
@click.option(
    "--drain",
    type=click.FloatRange(min=1),
    default=240.0,
    show_default=True,
    help="longest wait for a step's last calls to end",
)
@click.option(
    "--wpm",
    type=click.IntRange(min=1),
    default=WORDS_PER_MINUTE,
    show_default=True,
    help="words a minute the caller hears prompts (and speaks) at",
)
@click.option(
    "--answer-seconds",
    type=click.FloatRange(min=0),
    default=ANSWER_SECONDS,
    show_default=True,
    help="prompt end to first key or word",
)
@click.option(
    "--key-seconds",
    type=click.FloatRange(min=0),
    default=KEY_SECONDS,
    show_default=True,
    help="per key typed",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0.001, max=1),
    default=1.0,
    show_default=True,
    help="times all caller time (not pauses)",
)
@click.option(
    "--p99-ms",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="a step holds while every webhook kind's p99 is at most this",
)
@click.option(
    "--serve-option",
    "serve_options",
    multiple=True,
    help="added to `ivr serve`, e.g. --serve-option=--workers=3",
)
@click.option(
    "--mix",
    "mix_text",
    default="pin=1,passcode=1,failures=1,sms=1",
    show_default=True,
    help="the call scripts in proportion, round-robin; e.g. sms=1 for texts only",
)
@click.option(
    "--quick",
    is_flag=True,
    help="a tiny run for the tests: --steps 2,4 --ramp 1 --steady 8 --drain 60 --time-scale 0.05",
)
def realistic(
    steps: list[int],
    ramp: float,
    steady: float,
    drain: float,
    wpm: int,
    answer_seconds: float,
    key_seconds: float,
    time_scale: float,
    p99_ms: float,
    serve_options: tuple[str, ...],
    mix_text: str,
    quick: bool,
) -> None:
    """Capacity with callers who take as long as people (issue 9): ramps callers in steps until a
    webhook kind's p99 passes --p99-ms; prints what each step measured and the largest that held."""
    if quick:
        steps = [2, 4]
        ramp, steady, drain, time_scale = 1.0, 8.0, 60.0, 0.05
    try:
        mix = parse_mix(mix_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--mix") from None
    try:
        settings = environment_settings()
    except SettingsError as exc:
        sys.exit(failed(str(exc)))
    caller_time = CallerTime(wpm, answer_seconds, key_seconds, time_scale)
    paces = [Pacing(n, ramp, steady, drain, caller_time) for n in steps]
    idle = QUICK_IDLE_SECONDS if quick else IDLE_SECONDS
    sys.exit(run(paces, list(serve_options), p99_ms, settings, idle, mix))


def run(
    paces: list[Pacing],
    serve_options: list[str],
    p99_ms: float,
    settings: Settings,
    idle_seconds: float = IDLE_SECONDS,
    mix: Sequence[Callable[[int], CallPlan]] = MIX,
) -> int:
    """0: at least one step held; 1: none did; 2: could not run; 130: interrupted."""
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        flow = load_flow(FLOWS_DIR / f"{FLOW_NAME}.yaml")
        check_flow(flow)
        hasher = make_hasher(settings)
        argon2_seconds = argon2_cost(hasher)
        auth_token = secrets.token_hex(16)
        with (
            tempfile.TemporaryDirectory(prefix="ivr-bench-") as tmp,
            procfile_services(Path(tmp), auth_token, serve_options, LIMITS_RAISED) as stack,
        ):
            for line in header(paces[0], serve_options, settings, argon2_seconds, mix):
                print(line)
            print(
                f"serving     {stack.base_url} (gunicorn master pid {stack.web.pid}); worker "
                f"pid {stack.worker.pid}",
                flush=True,
            )
            target = Target(
                stack.base_url, auth_token, stack.redis_url, (stack.web.pid, stack.worker.pid)
            )
            idle = idle_rates(target, idle_seconds)
            print(
                f"idle CPU    web {idle.web * 1000:.1f} ms/s, worker {idle.worker * 1000:.1f} "
                f"ms/s, redis {idle.redis * 1000:.1f} ms/s with no calls (left out below)\n",
                flush=True,
            )
            texts, recorder = Texts(stack.outbox), Recorder(kinds.step_kinds(flow))
            summaries, first = [], 0
            for number, pacing in enumerate(paces, 1):
                count = budget(pacing)
                step = run_step(
                    target, pacing, plan_calls(count, first, mix), hasher, texts, recorder
                )
                first += count
                recorder.timed.clear()
                summary = summarise(step, idle, argon2_seconds, p99_ms)
                summaries.append(summary)
                lines = step_lines(number, len(paces), summary, pacing.ramp, pacing.steady)
                print("\n".join(lines), flush=True)
                if not summary.held:
                    break
            print("\n".join(summary_lines(summaries, p99_ms, len(os.sched_getaffinity(0)))))
            return 0 if any(s.held for s in summaries) else 1
    except KeyboardInterrupt:
        print("interrupted; everything it started is stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RuntimeError, OSError, IvrError, RedisError) as exc:
        return failed(str(exc))
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def budget(pacing: Pacing) -> int:
    """Customers to enrol for a step: more calls than its callers can start in it."""
    shortest = MIN_CALL_SECONDS * pacing.caller_time.scale
    return pacing.lines * (math.ceil((pacing.ramp + pacing.steady) / shortest) + 1)


def argon2_cost(hasher: SecretHasher) -> float:
    """CPU seconds of one verification at the production settings, on this machine, in this
    thread (argon2 runs in the caller's thread): what each PIN and passcode attempt pays."""
    stored = hasher.hash("correct horse battery")
    costs = []
    for _ in range(5):
        started = time.thread_time()
        hasher.verify(stored, "wrong horse battery")
        costs.append(time.thread_time() - started)
    return statistics.median(costs)


def header(
    pacing: Pacing,
    serve_options: list[str],
    settings: Settings,
    argon2_seconds: float,
    mix: Sequence[Callable[[int], CallPlan]],
) -> list[str]:
    model = pacing.caller_time
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return [
        "secure-ivr realistic capacity benchmark (issue 9)",
        f"python      {platform.python_implementation()} {platform.python_version()}; "
        f"{platform.platform()}; cpu {cpu_model() or '?'}",
        f"cpus        {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}); load average "
        f"at start {load} (other work on the machine shares these cores)",
        f"services    {' '.join(['ivr serve', *serve_options])} (gunicorn "
        f"{package_version('gunicorn')}) + ivr worker (rq {package_version('rq')}), as the "
        f"Procfile; private redis-server, no persistence",
        f"argon2id    time_cost={settings.argon2_time_cost} memory={settings.argon2_memory_kib} "
        f"KiB: {argon2_seconds * 1000:.1f} ms CPU per verification here",
        f"callers     prompts heard in full at {model.wpm} wpm, {model.answer_seconds:g} s to "
        f"start answering, {model.key_seconds:g} s a key, speech at {model.wpm} wpm"
        + (f", all times {model.scale:g}" if model.scale != 1 else "")
        + "; holds wait out each <Pause>",
        "mix         " + ", ".join(make(0).label for make in mix) + f" (flow {FLOW_NAME}), "
        "each call its own customer and calling number",
        "raised      " + ", ".join(f"{k}={v}" for k, v in LIMITS_RAISED.items()),
        "",
    ]


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
