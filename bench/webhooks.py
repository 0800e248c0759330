"""Webhook latency benchmark (SECURITY.md item 4): real gunicorn, real Redis, whole signed calls.

    .venv/bin/python bench/webhooks.py [--calls N] [--concurrency C] [--web-workers W]

It starts a private, non-persisting redis-server in a temporary directory, seeds the demo
customers with the argon2 cost production uses, starts the production app under gunicorn on
127.0.0.1, and plays N whole calls from C threads with the simulator (`CallPlayer` over
`HttpTransport`, every request signed as Twilio signs it). The calls are a fixed mix: PIN
successes, spoken-passcode successes, and calls that fail twice (wrong PIN, then wrong passcode)
and are sent to the flow's failure route. Each webhook request is timed around the transport
call (loopback HTTP plus everything the server does; signing is not included) and reported per
request kind with p50/p90/p99/max, against Twilio's 15 s budget.

Percentiles are nearest-rank. The client threads share the machine's CPUs with gunicorn and
redis-server, so the numbers include that contention. Everything stops by itself: calls not yet
started when --max-seconds runs out are skipped and reported, and every process the benchmark
started is terminated in a finally block. Exit status 0 means every call ended as scripted and
every request kind's p99 is under the budget.
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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from ivr.devserver import DEMO_CUSTOMERS, DemoCustomer, seed_demo_customers
from ivr.errors import IvrError
from ivr.flows.loader import load_flow
from ivr.flows.schema import AuthenticateStep, Flow, IdentifyStep, MenuStep
from ivr.processes import web_command
from ivr.runtime import connect_redis, make_hasher
from ivr.settings import Settings
from ivr.simulator import (
    CallPlayer,
    CallResult,
    HttpTransport,
    Keys,
    Reply,
    Scripted,
    Speech,
    scripted,
)
from ivr.store.server import RedisServer, find_free_port, tail

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWS_DIR = REPO_ROOT / "flows"
FLOW_NAME = "default"  # the call scripts below follow flows/default.yaml
LOOPBACK = "127.0.0.1"

TWILIO_BUDGET_S = 15.0
WEB_START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
BIND_ATTEMPTS = 3

# Request kinds, in the order the table prints them.
KIND_VOICE = "initial /voice"
KIND_IDENTIFY = "identify"
KIND_MENU = "menu"
KIND_PIN = "pin attempt"
KIND_PASSCODE = "passcode attempt"
KIND_STATUS = "status callback"
KIND_OTHER = "other"
KINDS = (KIND_VOICE, KIND_IDENTIFY, KIND_MENU, KIND_PIN, KIND_PASSCODE, KIND_STATUS)

# A caller ID on file for nobody: calls that type their account number come from here.
UNLISTED_CALLER = "+15005550009"
WRONG_PIN = "246810"
WRONG_PASSCODE = "orange tractor ninety"
FAILURE_ROUTE_TEXT = "could not verify your identity"


# --------------------------------------------------------------------------------------------
# Call scripts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallPlan:
    """One call to play: who calls, what they say at each <Gather>, and how it must end."""

    label: str
    from_number: str
    inputs: tuple[Keys | Speech, ...]
    expect_outcome: str
    expect_queue: str | None = None
    expect_said: str | None = None


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
    """Calls from the number on file, uses it (*#), says "passcode", the passcode, "card"."""
    return CallPlan(
        "passcode success",
        demo.phone,
        (Keys("*#"), Speech("passcode"), Speech(demo.passcode), Speech("card")),
        "enqueued",
        expect_queue="card-services",
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


MIX: tuple[Callable[[DemoCustomer], CallPlan], ...] = (pin_success, passcode_success, two_failures)


def plan_calls(count: int) -> list[CallPlan]:
    """Round-robin over the mix, switching demo customer after each full round.

    Every failure on an account is followed (in submission order) by a success of the same
    factor on that account, so the per-account lockout (10 consecutive failures) never trips
    even with calls overlapping; a trip would show up as unexpected outcomes, not be hidden.
    """
    return [
        MIX[i % len(MIX)](DEMO_CUSTOMERS[(i // len(MIX)) % len(DEMO_CUSTOMERS)])
        for i in range(count)
    ]


def check_call(plan: CallPlan, result: CallResult, script: Scripted) -> str | None:
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
            kinds[step_id] = KIND_PIN if step.method == "pin" else KIND_PASSCODE
    return kinds


class TimedTransport:
    """Wraps a transport and records how long each webhook request took, by request kind."""

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
        prefix = "/voice/step/"
        if path.startswith(prefix):
            return self.step_kinds.get(path[len(prefix) :], KIND_OTHER)
        return KIND_OTHER

    def _timed(self, url: str, send: Callable[[], Reply]) -> Reply:
        kind = self.classify(url)
        started = time.perf_counter()
        status = 0
        try:
            reply = send()
            status = reply.status
            return reply
        finally:
            sample = Sample(kind, time.perf_counter() - started, status)
            with self._lock:
                self.samples.append(sample)

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
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    argv,
                    env=self.env,
                    cwd=self.workdir,  # no stray .env: settings come from `env` alone
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group, so workers can be killed with it
                )
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
        """SIGTERM (graceful), then SIGKILL the whole process group. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
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


def service_env(redis_url: str, auth_token: str) -> dict[str, str]:
    env = dict(os.environ)
    # The calls are signed for the loopback URL and scripted for the default flow.
    env.pop("IVR_PUBLIC_URL", None)
    env.update(
        {
            "REDIS_URL": redis_url,
            "TWILIO_AUTH_TOKEN": auth_token,
            "IVR_FLOWS_DIR": str(FLOWS_DIR),
            "IVR_FLOW": FLOW_NAME,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    samples: list[Sample]
    wall_seconds: float
    played: int
    skipped: int
    failures: list[tuple[int, CallPlan, str, CallResult | None]]


def play_calls(
    plans: list[CallPlan],
    concurrency: int,
    base_url: str,
    auth_token: str,
    transport: TimedTransport,
    max_seconds: float,
) -> RunResult:
    deadline = time.monotonic() + max_seconds
    stop = threading.Event()
    failures: list[tuple[int, CallPlan, str, CallResult | None]] = []
    lock = threading.Lock()

    def one_call(index: int, plan: CallPlan) -> bool:
        if stop.is_set() or time.monotonic() > deadline:
            return False
        script = scripted(*plan.inputs)
        player = CallPlayer(transport, base_url, auth_token, from_number=plan.from_number)
        try:
            result = player.play(script)
            problem = check_call(plan, result, script)
        except Exception as exc:  # a script error: report it with the others
            result, problem = None, f"{type(exc).__name__}: {exc}"
        if problem is not None:
            with lock:
                failures.append((index, plan, problem, result))
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
    return RunResult(transport.samples, wall, played, len(plans) - played, failures)


def header(args: argparse.Namespace, settings: Settings, redis_version: str) -> list[str]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 0
    return [
        "secure-ivr webhook benchmark (SECURITY.md item 4)",
        f"python      {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        f"platform    {platform.platform()}; machine {platform.machine()}; "
        f"cpu {cpu_model() or platform.processor() or '?'}",
        f"cpus        os.cpu_count()={os.cpu_count()}, usable by this process={affinity}",
        f"servers     gunicorn {package_version('gunicorn')} --workers {args.web_workers} "
        f"(sync) on {LOOPBACK}; redis-server {redis_version} (private, no persistence)",
        f"argon2id    time_cost={settings.argon2_time_cost} "
        f"memory={settings.argon2_memory_kib} KiB parallelism=1 "
        f"pepper={'yes' if settings.pepper else 'no'}",
        f"load        {args.calls} calls from {args.concurrency} threads; mix: "
        + ", ".join(f.__name__.replace("_", " ") for f in MIX)
        + f" (flow {FLOW_NAME})",
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
        f"{total / run.wall_seconds:.1f} requests/s"
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    redis_server: RedisServer | None = None
    web: WebServer | None = None
    with tempfile.TemporaryDirectory(prefix="ivr-bench-") as tmp:
        workdir = Path(tmp)
        try:
            redis_server = RedisServer(workdir / "redis", persist=False)
            redis_url = redis_server.start()
            auth_token = secrets.token_hex(16)
            env = service_env(redis_url, auth_token)
            # Same source as the web process (environment only, no .env), so the demo secrets
            # are hashed with the pepper and argon2 cost the web process verifies with.
            settings = Settings(_env_file=None, redis_url=redis_url)  # type: ignore[call-arg]
            redis = connect_redis(redis_url)
            try:
                seed_demo_customers(redis, make_hasher(settings))
                redis_version = str(redis.info("server").get("redis_version", "?"))
            finally:
                redis.close()

            for line in header(args, settings, redis_version):
                print(line)

            web = WebServer(args.web_workers, env, workdir)
            web.start()
            print(f"serving     {web.base_url} (gunicorn master pid {web.pid})")
            print(flush=True)

            flow = load_flow(FLOWS_DIR / f"{FLOW_NAME}.yaml")
            transport = TimedTransport(HttpTransport(), request_kinds(flow))
            run = play_calls(
                plan_calls(args.calls),
                args.concurrency,
                web.base_url,
                auth_token,
                transport,
                args.max_seconds,
            )
            lines, within = report(run, args.concurrency)
            print("\n".join(lines))
            if run.failures:
                print(f"\ngunicorn log tail:\n{tail(web.log_path, 20)}")
            return 0 if within and not run.failures and not run.skipped else 1
        except KeyboardInterrupt:
            print("interrupted; stopping the servers", file=sys.stderr)
            return 130
        except (RuntimeError, OSError, IvrError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 2
        finally:
            if web is not None:
                web.stop()
            if redis_server is not None:
                redis_server.stop()
            signal.signal(signal.SIGTERM, previous_sigterm)


if __name__ == "__main__":
    sys.exit(main())
