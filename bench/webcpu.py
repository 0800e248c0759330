"""Web CPU per webhook, by kind, measured in-process against a real redis-server.

    .venv/bin/python bench/webcpu.py [--calls 200] [--repeat 3] [--profile N] [--gunicorn]

Plays whole signed calls of the default flow (account number, PIN, the card menu, "text me a
code", a hold while the job runs, the code from the outbox, the status callback) through
Flask's test client, and times each request with `time.process_time()` around the app alone:
signing, the caller's side and the jobs (run in this process at each hold, as `rq worker
--burst` would) are outside the timed region, and the redis-server is another process. So a
figure is what one web process spends on that webhook, less what gunicorn itself adds (the
same for any Flask app). CPU time, not wall time: the machine may be busy.

The last table is the same measurement of a minimal Flask app that checks the signature with
RequestValidator and answers a <Gather> with VoiceResponse: the floor any Twilio webhook in
Flask pays. PIN and passcode attempts are mostly argon2 (production cost) and are shown apart.
`--profile N` prints the cProfile (CPU time) of N calls' non-argon2 requests instead.

`--gunicorn` plays the same calls over HTTP to a real gunicorn started as production starts it
(`ivr.processes.web_command`, one worker) against a real redis-server, and reads the worker's
CPU from /proc/<pid>/stat (utime + stime) before and after each round: ms per webhook for this
app and, on a second gunicorn with the same options measured round about, for the minimal app.
argon2 runs at its least cost there (IVR_ARGON2_TIME_COST=1, IVR_ARGON2_MEMORY_KIB=1024), and
what one check costs is measured and taken off each PIN webhook.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.connection
from flask import Flask, request
from rq import Queue, SimpleWorker
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Gather, VoiceResponse

from bench.procstat import children, tree_cpu
from ivr.app import create_app
from ivr.dev.customers import DEMO_CUSTOMERS, customer_record
from ivr.flows.schema import AuthenticateStep, IdentifyStep, MenuStep
from ivr.outbox import Outbox
from ivr.processes import QUEUE, web_command
from ivr.runtime import Runtime, connect_redis
from ivr.settings import ENV_NAMES
from ivr.simulator import CallPlayer, HttpTransport, Keys, Reply, WsgiTransport
from ivr.simulator import Gather as HeardGather
from ivr.simulator.phone import CODE_IN_TEXT
from ivr.simulator.transport import Transport
from ivr.store.server import RedisServer, find_free_port, tail

TOKEN = "bench-webcpu-auth-token-0123456789"  # noqa: S105 - a throwaway local server
CODE_KEY = "bench-webcpu-code-key-0123456789"
BASE_URL = "http://localhost"
FLOWS_DIR = Path(__file__).resolve().parents[1] / "flows"
ARGON2 = ("pin attempt", "passcode attempt")
MINIMAL = "minimal Flask + RequestValidator + VoiceResponse"


class CpuTimed:
    """A transport that adds up the CPU each request costs inside the app, by kind."""

    def __init__(
        self,
        inner: WsgiTransport,
        kind: Callable[[str, Reply], str],
        profiler: cProfile.Profile | None = None,
        skip: Callable[[str], bool] = lambda url: False,
    ) -> None:
        self.inner, self.kind, self.profiler, self.skip = inner, kind, profiler, skip
        self.cpu: dict[str, list[float]] = defaultdict(list)

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        profiler = None if self.profiler is None or self.skip(url) else self.profiler
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        reply = self.inner.post(url, params, headers)
        if profiler is not None:
            profiler.disable()
        spent = time.process_time() - started
        self.cpu[self.kind(url, reply)].append(spent)
        return reply

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        return self.inner.get(url, headers)


def kinds_of(rt: Runtime) -> Callable[[str, Reply], str]:
    steps: dict[str, str] = {}
    for step_id, step in rt.flow.steps.items():
        if isinstance(step, IdentifyStep):
            steps[step_id] = "identify"
        elif isinstance(step, MenuStep):
            steps[step_id] = "menu"
        elif isinstance(step, AuthenticateStep):
            steps[step_id] = {"pin": "pin attempt", "passcode": "passcode attempt"}.get(
                step.method, "code attempt"
            )

    def kind(url: str, reply: Reply) -> str:
        path = urlsplit(url).path
        if path == "/voice":
            return "initial /voice"
        if path == "/voice/status":
            return "status callback"
        if path.startswith("/voice/poll/"):
            return "hold poll"
        if "/voice/poll/" in reply.body:
            return "code request"  # its answer puts the caller on hold: it queued the job
        return steps.get(path.removeprefix("/voice/step/"), "other")

    return kind


def worker_environment(outbox: Path) -> None:
    """The jobs read their settings from the environment, as a worker does."""
    for name in ENV_NAMES.values():
        os.environ.pop(name, None)
    os.environ.update(
        IVR_CODE_KEY=CODE_KEY,
        IVR_OUTBOX=str(outbox),
        IVR_SMS_BACKEND="outbox",
        IVR_EMAIL_BACKEND="outbox",
        IVR_CALL_BACKEND="outbox",
    )


def play_calls(
    app: Flask,
    rt: Runtime,
    calls: int,
    outbox: Path,
    profiler: cProfile.Profile | None = None,
    transport: type[CpuTimed] = CpuTimed,
    inner: Transport | None = None,
    base_url: str = BASE_URL,
) -> dict[str, list[float]]:
    """`calls` PIN + SMS step-up calls, one customer each (so no limit is ever reached), to
    `app` in-process, or through `inner` (HTTP) to the server at `base_url`."""
    template = DEMO_CUSTOMERS[0]
    enrolled = customer_record(template, rt.hasher)  # hashed once, at the production cost
    pin_steps = {
        f"/voice/step/{step_id}"
        for step_id, step in rt.flow.steps.items()
        if isinstance(step, AuthenticateStep) and step.method in ("pin", "passcode")
    }
    timed = transport(
        inner or WsgiTransport(app),  # type: ignore[arg-type]
        kinds_of(rt),
        profiler,
        lambda url: urlsplit(url).path in pin_steps,
    )
    worker = SimpleWorker([Queue(QUEUE, connection=rt.redis)], connection=rt.redis)
    box = Outbox(outbox)
    first = rt.redis.incrby("bench:webcpu:calls", calls) - calls
    for index in range(first, first + calls):
        who = replace(template, account=f"4{index:07d}", phone=f"+1415{index:07d}")
        rt.customers.add(replace(enrolled, account=who.account, phone=who.phone))
        started = time.time()

        def answer(
            gather: HeardGather, heard: list[str], who: Any = who, started: float = started
        ) -> Any:
            step = urlsplit(gather.action or "").path.rsplit("/", 1)[-1]
            typed = {"identify": who.account + "#", "choose_method": "1", "pin": who.pin + "#",
                     "main_menu": "2", "card_check": "1"}.get(step)  # fmt: skip
            if typed is not None:
                return Keys(typed)
            for message in reversed(box.since(started)):
                found = CODE_IN_TEXT.search(message.body)
                if found:
                    return Keys(found.group(1) + "#")
            raise AssertionError(f"bench script lost at step {step!r}")

        def on_pause(kind: str, line: str) -> None:
            if kind == "pause":
                worker.work(burst=True, logging_level="ERROR")

        player = CallPlayer(
            timed, base_url, TOKEN, from_number=who.phone, pause_scale=0, observer=on_pause
        )
        result = player.play(answer)
        if result.queue != "card-services":
            raise SystemExit(f"call {index} did not end as scripted:\n{result.transcript()}")
    return timed.cpu


def round_trips(app: Flask, rt: Runtime, calls: int, outbox: Path) -> dict[str, list[float]]:
    """Redis round trips per request, by kind: one `send_packed_command` is one (a pipeline or
    a script included). As counts, in the same shape as the CPU figures."""
    sent = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        sent[0] += 1
        original(self, *args, **kwargs)

    class Counted(CpuTimed):
        def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
            before = sent[0]
            reply = self.inner.post(url, params, headers)
            self.cpu[self.kind(url, reply)].append(sent[0] - before)
            return reply

    redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        return play_calls(app, rt, calls, outbox, transport=Counted)
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def minimal_app() -> Flask:
    """The floor: a Twilio webhook in Flask that checks the signature and answers a Gather."""
    app = Flask("minimal")
    validator = RequestValidator(TOKEN)

    @app.post("/voice/step/<step>")
    def step(step: str) -> Any:
        if not validator.validate(
            request.url, request.form, request.headers.get("X-Twilio-Signature", "")
        ):
            return "", 403
        response = VoiceResponse()
        gather = Gather(input="dtmf", action=f"/voice/step/{step}?seq=1", method="POST")
        gather.say("For PIN, press 1. For passcode, press 2.", language="en-US")
        response.append(gather)
        response.redirect(f"/voice/step/{step}?seq=1", method="POST")
        return app.response_class(str(response), mimetype="application/xml")

    return app


def minimal_params(index: int) -> dict[str, str]:
    """What the call player sends with a keyed answer (`CallPlayer._call_params`, Digits)."""
    return {
        "CallSid": f"CA{index:032x}",
        "AccountSid": "AC" + "5e" * 16,
        "From": "+14155550100",
        "To": "+15005550001",
        "Caller": "+14155550100",
        "Called": "+15005550001",
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        "Digits": "1",
        "FinishedOnKey": "",
        "msg": "Gather End",
    }


def play_minimal(
    requests: int, inner: Transport | None = None, base_url: str = BASE_URL
) -> list[float]:
    transport = CpuTimed(inner or WsgiTransport(minimal_app()), lambda url, reply: MINIMAL)  # type: ignore[arg-type]
    url = f"{base_url}/voice/step/choose_method?seq=0"
    validator = RequestValidator(TOKEN)
    for index in range(requests):
        params = minimal_params(index)
        headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
        reply = transport.post(url, params, headers)
        assert reply.status == 200, reply
    return transport.cpu[MINIMAL]


#: The argon2 cost of the gunicorn mode: its least, so the PIN webhooks cost little more than
#: the others, and what they do cost is measured here and taken off.
CHEAP_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024}
GUNICORN_START_S = 30.0
MINIMAL_APP = "bench.webcpu:minimal_app()"


class Gunicorn:
    """gunicorn as `ivr.processes.web_command` starts it (one worker, gthread), on `app_spec`,
    on a free loopback port; stopped on the way out."""

    def __init__(self, app_spec: str, env: dict[str, str], workdir: Path, name: str) -> None:
        from bench.stack import Child, wait_answering

        port = find_free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        argv = [*web_command(f"127.0.0.1:{port}", 1)[:-1], app_spec]
        env = {**env, "IVR_PUBLIC_URL": self.base_url}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        self.child = Child(argv, env, workdir, workdir / f"{name}.log")
        try:
            wait_answering(self.child, port)
            deadline = time.monotonic() + GUNICORN_START_S
            while not (pids := children(self.child.pid)):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no gunicorn worker; log:\n{tail(self.child.log_path)}")
                time.sleep(0.1)
            self.workers = pids
        except BaseException:
            self.child.stop()
            raise

    def cpu(self) -> float:
        return sum(tree_cpu(pid) for pid in self.workers)

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.child.stop()


def argon2_cpu(rt: Runtime, rounds: int = 200) -> float:
    """CPU seconds of one PIN check at the hasher's cost, as the web process pays it."""
    stored = rt.hasher.hash("583920")
    rt.hasher.verify(stored, "583920")
    started = time.process_time()
    for _ in range(rounds):
        rt.hasher.verify(stored, "583920")
    return (time.process_time() - started) / rounds


def gunicorn_mode(calls: int, repeat: int) -> int:
    """Whole calls over HTTP to gunicorn, web CPU read from /proc for its worker; then as many
    requests to the minimal app on the same gunicorn."""
    from bench.stack import service_env

    with tempfile.TemporaryDirectory(prefix="ivr-webcpu-") as tmp:
        workdir = Path(tmp)
        outbox = workdir / "outbox.jsonl"
        worker_environment(outbox)
        with RedisServer(workdir / "redis", persist=False) as server:
            client = connect_redis(server.url)
            # This side enrols the customers and runs the jobs at each hold, as the worker would.
            app = create_app(
                {"twilio_auth_token": TOKEN, "code_key": CODE_KEY, "flows_dir": FLOWS_DIR,
                 "outbox": outbox, "public_url": BASE_URL, **CHEAP_ARGON2},
                redis=client,
            )  # fmt: skip
            import logging

            logging.getLogger("ivr.audit").setLevel(logging.WARNING)  # the jobs' lines, here
            rt: Runtime = app.extensions["ivr"]
            env = service_env(server.url, BASE_URL, TOKEN, CODE_KEY, outbox)
            env.update({ENV_NAMES[name]: str(value) for name, value in CHEAP_ARGON2.items()})
            pin_cpu = argon2_cpu(rt)
            ours: list[tuple[float, int, int]] = []
            floor: list[tuple[float, int]] = []
            http = HttpTransport()
            # Both servers up at once and measured round about, so a busy spell of the machine
            # weighs on both alike.
            with (
                Gunicorn("ivr.app:create_app()", env, workdir, "gunicorn") as web,
                Gunicorn(MINIMAL_APP, env, workdir, "minimal") as minimal,
            ):
                play_calls(app, rt, 5, outbox, inner=http, base_url=web.base_url)  # warm
                play_minimal(50, http, minimal.base_url)
                for _ in range(repeat):
                    client.flushall()  # the send limits of the round before
                    before = web.cpu()
                    cpu = play_calls(app, rt, calls, outbox, inner=http, base_url=web.base_url)
                    spent = web.cpu() - before
                    pins = sum(len(v) for k, v in cpu.items() if k in ARGON2)
                    requests = sum(len(v) for v in cpu.values())
                    ours.append((spent, requests, pins))
                    before = minimal.cpu()
                    play_minimal(requests, http, minimal.base_url)
                    floor.append((minimal.cpu() - before, requests))
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    print(
        f"web CPU per webhook on gunicorn (1 worker, {ivr_threads()} threads), from /proc utime+"
        f"stime of the worker; {calls} whole calls per round, {repeat} rounds; "
        f"/proc counts in {tick:g} ms ticks"
    )
    print(f"argon2 at its least cost, taken off each PIN webhook: {pin_cpu * 1000:.3f} ms")
    for index, ((spent, n, pins), (floor_spent, floor_n)) in enumerate(
        zip(ours, floor, strict=True), 1
    ):
        print(
            f"round {index}: ours {(spent - pins * pin_cpu) / n * 1000:.3f} ms per webhook "
            f"non-argon2 ({spent / n * 1000:.3f} with it; {n} webhooks, {pins} PIN), "
            f"minimal app {floor_spent / floor_n * 1000:.3f} ms ({floor_n} requests); "
            f"ratio {(spent - pins * pin_cpu) / n / (floor_spent / floor_n):.2f}"
        )
    best = min((spent - pins * pin_cpu) / n for spent, n, pins in ours)
    print(
        f"best round: ours {best * 1000:.3f} ms per non-argon2 webhook, minimal app "
        f"{min(s / n for s, n in floor) * 1000:.3f} ms"
    )
    return 0


def ivr_threads() -> int:
    from ivr.processes import WEB_THREADS

    return WEB_THREADS


def table(rows: dict[str, list[float]]) -> str:
    lines = [f"{'kind':<24} {'n':>6} {'median ms':>10} {'mean ms':>9}"]
    for kind, spent in rows.items():
        ms = [s * 1000 for s in spent]
        lines.append(
            f"{kind:<24} {len(ms):>6} {statistics.median(ms):>10.3f} {statistics.fmean(ms):>9.3f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is kept")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="print the cProfile of N calls' non-argon2 requests and stop",
    )
    parser.add_argument(
        "--gunicorn",
        action="store_true",
        help="measure on a real gunicorn (CPU of its worker from /proc) instead of in-process",
    )
    args = parser.parse_args()
    if args.gunicorn:
        return gunicorn_mode(args.calls, args.repeat)
    with tempfile.TemporaryDirectory(prefix="ivr-webcpu-") as tmp:
        outbox = Path(tmp) / "outbox.jsonl"
        worker_environment(outbox)
        with RedisServer(Path(tmp) / "redis", persist=False) as server:
            client = connect_redis(server.url)
            app = create_app(
                {"twilio_auth_token": TOKEN, "code_key": CODE_KEY, "flows_dir": FLOWS_DIR,
                 "outbox": outbox, "public_url": BASE_URL},
                redis=client,
            )  # fmt: skip
            import logging

            logging.getLogger("ivr").setLevel(logging.WARNING)  # the log lines are not the point
            logging.getLogger("ivr.audit").setLevel(logging.WARNING)
            rt: Runtime = app.extensions["ivr"]
            play_calls(app, rt, 5, outbox)  # warm: scripts loaded, flows parsed, imports done
            if args.profile:
                profiler = cProfile.Profile(time.process_time)
                play_calls(app, rt, args.profile, outbox, profiler)
                stats = pstats.Stats(profiler)
                if os.environ.get("WEBCPU_PROFILE_DUMP"):
                    stats.dump_stats(os.environ["WEBCPU_PROFILE_DUMP"])
                stats.sort_stats("cumulative").print_stats(60)
                stats.sort_stats("tottime").print_stats(30)
                return 0
            trips = round_trips(app, rt, 5, outbox)
            best: dict[str, list[float]] = {}
            for _ in range(args.repeat):
                client.flushall()
                cpu = play_calls(app, rt, args.calls, outbox)
                for kind, spent in cpu.items():
                    if kind not in best or statistics.median(spent) < statistics.median(best[kind]):
                        best[kind] = spent
            floor = min(
                (play_minimal(args.calls * 4) for _ in range(args.repeat)), key=statistics.median
            )
    cheap = {k: v for k, v in best.items() if k not in ARGON2}
    print(
        f"web CPU per webhook, in-process, {args.calls} calls x {args.repeat} rounds (best round)"
    )
    print(table(cheap))
    print()
    print("Redis round trips per request: " + ", ".join(
        f"{kind} {statistics.fmean(n):g}" for kind, n in trips.items()))  # fmt: skip
    print()
    print("argon2 (production cost) kinds:")
    print(table({k: v for k, v in best.items() if k in ARGON2}))
    print()
    print(table({MINIMAL: floor}))
    every = [s for spent in cheap.values() for s in spent]
    print()
    print(
        f"non-argon2, all kinds: median {statistics.median(every) * 1000:.3f} ms, "
        f"mean {statistics.fmean(every) * 1000:.3f} ms; minimal app median "
        f"{statistics.median(floor) * 1000:.3f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
