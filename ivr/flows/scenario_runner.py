"""`ivr flows test`: play scenario files through the call simulator, then report coverage and
how long each call takes a real caller.

In process (the default) every scenario gets a service of its own: the app on a fresh
fakeredis, the file's customers enrolled, and the worker's jobs run with rq's SimpleWorker
whenever the caller is put on hold, so a code lands in the outbox as it would. The engine's
trace hook records every step entered and every edge taken. With `--url` the same scenarios
play against a running service over HTTP; coverage then cannot be observed, and is not shown.

Caller time is an estimate of the call as a person lives it, not of the test's run time:
every prompt heard spoken at `WORDS_PER_MINUTE`, every `<Pause>` (the holds for a code), the
full gather timeout on each silence, and `ANSWER_SECONDS` to answer each prompt (plus the
words, for speech). Prompts are heard in full: a first-time caller does not barge in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ivr.errors import FlowDefinitionError, IvrError, Problem
from ivr.flows.loader import Marks, load_flow_with_marks
from ivr.flows.scenarios import Scenario, ScenarioFile, Step, load_scenarios
from ivr.flows.schema import AuthenticateStep, Flow
from ivr.outbox import Outbox, OutboxMessage
from ivr.simulator import CallPlayer, CallResult, Gather, HttpTransport, Keys, Speech
from ivr.simulator.phone import CODE_IN_TEXT

WORDS_PER_MINUTE = 150  # a measured, clear IVR voice; conversational speech runs nearer 160
ANSWER_SECONDS = 1.5  # to take in a prompt and start answering it
CALLBACK_NUMBER = "+15005550001"  # the number the call back comes from (our caller ID)
WORKFLOW_SID = "WW" + "0" * 32  # in process: enqueue as a task, so its attributes are seen
Edge = tuple[str, str, str]


# -- what one scenario did -------------------------------------------------------------------


@dataclass
class ScenarioResult:
    file: str
    line: int | None
    name: str
    flow: str
    failure: str | None = None
    transcript: list[str] = field(default_factory=list)
    to_authenticated: float | None = None
    to_queue: float | None = None
    steps: set[str] = field(default_factory=set)
    edges: set[Edge] = field(default_factory=set)

    @property
    def passed(self) -> bool:
        return self.failure is None


class _Failed(Exception):
    """A scenario's expectation or script does not hold; the message says which and where."""


def speech_seconds(text: str, wpm: int = WORDS_PER_MINUTE) -> float:
    return len(re.findall(r"[\w']+", text)) * 60.0 / wpm


class _Call:
    """The caller of one scenario, across its calls: the `InputSource` every player asks, the
    observer every player reports to, and the clock of the caller's time."""

    def __init__(self, run: _Run, scenario: Scenario, marks: Marks, index: int) -> None:
        self.run, self.scenario, self.marks, self.index = run, scenario, marks, index
        self.next = 0
        self.clock = 0.0
        self.heard: list[str] = []
        self.checked = 0  # position in `heard` the next `hear` searches from
        self.log: list[str] = []
        self.trace: list[tuple[str | None, str | None, str, float]] = []
        self.to_authenticated: float | None = None  # as the service audited it (over HTTP)
        self.to_queue: float | None = None

    # -- the player's side --

    def observe(self, kind: str, line: str) -> None:
        if kind != "request":
            self.log.append(line)
        elif self.to_authenticated is None and self.run.target.authenticated():
            self.to_authenticated = self.clock
        if kind == "say":
            text = line.removeprefix("IVR: ")
            self.heard.append(text)
            self.clock += speech_seconds(text)
        elif kind == "pause":
            self.clock += int(line.split()[-1].rstrip("s"))
            self.run.target.hold()  # the caller holds; the worker works meanwhile
        elif kind == "outcome" and line.startswith("-> enqueued"):
            self.to_queue = self.clock

    def record(self, source: str | None, field: str | None, target: str) -> None:
        self.trace.append((source, field, target, self.clock))

    def __call__(self, gather: Gather, heard_so_far: list[str]) -> Keys | Speech | None:
        self._expectations(None)
        if self.next >= len(self.scenario.steps):
            raise _Failed(f"the IVR asked for more input than scripted; {self._last()}")
        step = self.scenario.steps[self.next]
        if step.kind in ("answer_callback", "new_call"):
            raise _Failed(f"{self._where()}: `{step.kind}` but the call goes on; {self._last()}")
        self.next += 1
        answer = self._answer(step)
        if answer is None:
            self.clock += gather.timeout
        else:
            spoken = speech_seconds(answer.text) if isinstance(answer, Speech) else 0.0
            self.clock += ANSWER_SECONDS + spoken
        return answer

    # -- the scenario's side --

    def play(self) -> None:
        """Every call of the scenario, then every expectation left."""
        result = self._leg(self.run.target.player(self, self.scenario.caller, None))
        while True:
            self._expectations(result)
            if self.next >= len(self.scenario.steps):
                return
            step = self.scenario.steps[self.next]
            self.next += 1
            if step.answer_callback:
                ring = self.run.target.call_back()
                if ring is None:
                    raise _Failed(f"{self._where(-1)}: no call back arrived")
                self.log.append(f"(the phone on file {ring.to} rings; the customer answers)")
                result = self._leg(self.run.target.player(self, CALLBACK_NUMBER, ring))
            elif step.new_call:
                self.log.append("(the caller calls again)")
                result = self._leg(self.run.target.player(self, self.scenario.caller, None))
            else:
                raise _Failed(
                    f"{self._where(-1)}: the call ended ({result.outcome}) before "
                    f"`{step.describe()}`"
                )

    def _leg(self, player: CallPlayer) -> CallResult:
        result = player.play(self)
        if result.outcome == "error":
            raise _Failed(f"the service failed the call: {result.error}")
        return result

    def _answer(self, step: Step) -> Keys | Speech | None:
        if step.press is not None:
            return Keys(step.press)
        if step.say is not None:
            return Speech(step.say, 0.92 if step.confidence is None else step.confidence)
        if step.code is not None:
            code = self.run.target.latest_code(step.code)
            if code is None:
                raise _Failed(f"{self._where(-1)}: no {step.code} code has arrived")
            return Keys(code + "#")
        if step.service_code is not None:
            return Keys(self.run.target.service_code(step.service_code) + "#")
        return None  # silence

    def _expectations(self, ended: CallResult | None) -> None:
        """Check the expectations before the next action: `hear` against what was heard so
        far; `queue` and `no_queue` only once a call has ended (`ended`)."""
        steps = self.scenario.steps
        while self.next < len(steps) and not steps[self.next].is_action:
            step = steps[self.next]
            self.next += 1
            if step.hear is not None or step.hear_re is not None:
                self._hear(step)
            elif ended is None:
                raise _Failed(f"{self._where(-1)}: `{step.describe()}` but the IVR asks on")
            else:
                self._queue(step, ended)

    def _hear(self, step: Step) -> None:
        for i in range(self.checked, len(self.heard)):
            text = self.heard[i]
            if step.hear is not None and step.hear.casefold() in text.casefold():
                self.checked = i
                return
            if step.hear_re is not None and re.search(step.hear_re, text):
                self.checked = i
                return
        raise _Failed(f"{self._where(-1)}: `{step.describe()}` not heard; {self._last()}")

    def _queue(self, step: Step, result: CallResult) -> None:
        where = self._where(-1)
        verb = result.enqueue
        attributes = (verb.attributes if verb else None) or {}
        reached = (verb.queue or str(attributes.get("intent", ""))) if verb else None
        if step.no_queue:
            if reached:
                raise _Failed(f"{where}: `no_queue` but the call reached queue {reached!r}")
            return
        if reached != step.queue:
            got = f"queue {reached!r}" if reached else f"no queue ({result.outcome})"
            raise _Failed(f"{where}: expected queue {step.queue!r}, got {got}")
        if step.assurance is not None and attributes.get("assurance") != step.assurance:
            raise _Failed(
                f"{where}: expected assurance {step.assurance}, got {attributes.get('assurance')}"
                + ("" if attributes else " (no task attributes: is TaskRouter configured?)")
            )
        for key, want in (step.attributes or {}).items():
            if not _subset(want, attributes.get(key)):
                raise _Failed(
                    f"{where}: task attribute {key!r} is {attributes.get(key)!r}, expected {want!r}"
                )

    def _where(self, offset: int = 0) -> str:
        j = self.next + offset
        line, col = self.marks.get(("scenarios", self.index, "steps", j), (None, None))
        return f"{self.run.file}:{line}:{col} step {j + 1}"

    def _last(self) -> str:
        return f"it last said: {self.heard[-1]!r}" if self.heard else "nothing was heard"


def _subset(want: Any, got: Any) -> bool:
    """`want` is in `got`: mappings by key, lists item by item in order, the rest equal."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(_subset(v, got.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(want) <= len(got) and all(map(_subset, want, got))
    return bool(want == got)


# -- where the scenarios play ------------------------------------------------------------------


class InProcess:
    """A fresh service per scenario: the app on its own fakeredis, the worker in process."""

    def __init__(self, flows_dir: Path, flow: str, customers: list[Any], work: Path) -> None:
        self.flows_dir, self.flow_name, self.customers = flows_dir, flow, customers
        self.work = work
        self.token = secrets.token_hex(16)
        self.api_token = secrets.token_hex(16)
        self.code_key = secrets.token_hex(16)
        self.app: Any = None
        self.outbox: Outbox | None = None

    def worker_env(self) -> dict[str, str]:
        """What the jobs read their settings from (they load them from the environment)."""
        return {
            "IVR_CODE_KEY": self.code_key,
            "IVR_OUTBOX": str(self.work / "outbox.jsonl"),
            "IVR_SMS_BACKEND": "outbox",
            "IVR_EMAIL_BACKEND": "outbox",
            "IVR_CALL_BACKEND": "outbox",
            "IVR_LOOKUP": "off",
        }

    def start(self, call: _Call) -> None:
        import fakeredis

        from ivr.app import create_app
        from ivr.devserver import DemoCustomer, customer_record
        from ivr.settings import load_settings

        outbox = self.work / f"outbox-{call.index}.jsonl"
        outbox.unlink(missing_ok=True)
        self.outbox = Outbox(outbox)
        os.environ["IVR_OUTBOX"] = str(outbox)
        settings = load_settings(
            twilio_auth_token=self.token,
            api_token=self.api_token,
            code_key=self.code_key,
            pepper=secrets.token_hex(16),
            # Secrets here are test data: cheap hashing keeps a scenario to milliseconds.
            argon2_memory_kib=1024,
            argon2_time_cost=1,
            flows_dir=self.flows_dir,
            flow=self.flow_name,
            outbox=outbox,
            sms_backend="outbox",
            email_backend="outbox",
            call_backend="outbox",
            lookup="off",
            taskrouter_workflow_sid=WORKFLOW_SID,
        )
        self.redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        self.app = create_app(settings, redis=self.redis)
        rt = self.app.extensions["ivr"]
        for who in self.customers:
            demo = DemoCustomer(
                who.account, who.phone, who.pin, who.passcode, who.name, who.email, who.address
            )
            rt.customers.add(customer_record(demo, rt.hasher))
        rt.engine.trace = call.record

    def player(self, call: _Call, caller: str, ring: OutboxMessage | None) -> CallPlayer:
        from ivr.simulator import WsgiTransport

        extra = {"StirVerstat": call.scenario.stir_verstat} if call.scenario.stir_verstat else {}
        if ring is not None:
            return CallPlayer(
                WsgiTransport(self.app),
                "http://localhost",
                self.token,
                from_number=caller,
                to_number=ring.to,
                call_sid=ring.call_sid,
                voice_path="/voice/callback",
                extra_params={"Direction": "outbound-api"},
                observer=call.observe,
                pause_scale=0,
            )
        return CallPlayer(
            WsgiTransport(self.app),
            "http://localhost",
            self.token,
            from_number=caller,
            extra_params=extra,
            observer=call.observe,
            pause_scale=0,
        )

    def authenticated(self) -> bool:
        """In process the engine trace tells when the caller was authenticated."""
        return False

    def hold(self) -> None:
        _run_jobs(self.redis)

    def call_back(self) -> OutboxMessage | None:
        _run_jobs(self.redis)
        assert self.outbox is not None
        calls = [m for m in self.outbox.messages() if m.channel == "call"]
        return calls[-1] if calls else None

    def latest_code(self, channel: str) -> str | None:
        assert self.outbox is not None
        return _latest_code(self.outbox, channel)

    def service_code(self, account: str) -> str:
        response = self.app.test_client().post(
            "/api/service-codes",
            json={"account": account},
            headers={"Authorization": f"Bearer {self.api_token}"},
        )
        if response.status_code != 201:
            raise _Failed(f"POST /api/service-codes: {response.get_json()}")
        return str(response.get_json()["code"])


def _run_jobs(redis: Any) -> None:
    """Every job queued now, in this process, as `rq worker --burst` would; rq's signal
    handlers are put back afterwards."""
    import signal

    from rq import Queue, SimpleWorker

    from ivr.processes import QUEUE

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        SimpleWorker([Queue(QUEUE, connection=redis)], connection=redis).work(
            burst=True, logging_level="WARNING"
        )
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _latest_code(outbox: Outbox, channel: str) -> str | None:
    for message in reversed(outbox.messages()):
        if message.channel == channel:
            found = CODE_IN_TEXT.search(message.body)
            if found:
                return found.group(1)
    return None


class OverHttp:
    """A running service (`ivr dev`, or a dev or staging one with its Auth Token): real HTTP,
    real pauses, the real worker. Its Redis must be reachable: the file's customers are enrolled
    there, and before each scenario what earlier ones left for those customers and the calling
    numbers is forgotten (`forget_test_identities`), as in process each scenario starts afresh."""

    def __init__(self, url: str, settings: Any, state: Any, customers: list[Any]) -> None:
        self.url = url.rstrip("/")
        self.token = settings.twilio_auth_token or (state.auth_token if state else None)
        if not self.token:
            raise IvrError("TWILIO_AUTH_TOKEN: not set; requests must be signed like Twilio's")
        self.api_token = settings.api_token or (state.api_token if state else None)
        self.outbox = Outbox(Path(state.outbox) if state else settings.outbox)
        self.settings, self.seen, self.customers = settings, 0, customers
        self.redis = _service_redis(settings.redis_url or (state.redis_url if state else None))
        self.sids: set[str] = set()
        self.audit_cursor = "0-0"
        if customers:
            from ivr.devserver import DemoCustomer, customer_record
            from ivr.runtime import make_hasher
            from ivr.store.customers import RedisCustomerDirectory

            directory = RedisCustomerDirectory(self.redis)
            for who in customers:
                if directory.get(who.account) is None:
                    demo = DemoCustomer(
                        who.account, who.phone, who.pin, who.passcode, who.name, who.email,
                        who.address,
                    )  # fmt: skip
                    directory.add(customer_record(demo, make_hasher(settings)))

    def start(self, call: _Call) -> None:
        from ivr.store import keys
        from ivr.store.test_identities import forget_test_identities

        numbers = {call.scenario.caller, CALLBACK_NUMBER, *(who.phone for who in self.customers)}
        forget_test_identities(self.redis, [who.account for who in self.customers], numbers)
        self.seen = len(self.outbox.messages())
        self.sids = set()
        newest = self.redis.xrevrange(keys.AUDIT, count=1)
        self.audit_cursor = newest[0][0].decode() if newest else "0-0"

    def authenticated(self) -> bool:
        """Whether the service has audited a proof of this scenario's calls since last asked:
        the `authenticate` event with outcome `success`, as the engine trace is not seen."""
        from ivr.store import keys

        fresh = self.redis.xrange(keys.AUDIT, min=f"({self.audit_cursor}", max="+")
        if fresh:
            self.audit_cursor = fresh[-1][0].decode()
        return any(
            values.get(b"event") == b"authenticate"
            and values.get(b"outcome") == b"success"
            and values.get(b"call_sid", b"").decode() in self.sids
            for _, values in fresh
        )

    def player(self, call: _Call, caller: str, ring: OutboxMessage | None) -> CallPlayer:
        extra = {"StirVerstat": call.scenario.stir_verstat} if call.scenario.stir_verstat else {}
        options: dict[str, Any] = {"from_number": caller, "observer": call.observe}
        if ring is not None:
            options |= {
                "to_number": ring.to,
                "call_sid": ring.call_sid,
                "voice_path": "/voice/callback",
                "extra_params": {"Direction": "outbound-api"},
            }
        else:
            options["extra_params"] = extra
        player = CallPlayer(HttpTransport(), self.url, self.token, **options)
        self.sids.add(player.call_sid)
        return player

    def hold(self) -> None:
        """The player really pauses; the service's worker delivers meanwhile."""

    def call_back(self) -> OutboxMessage | None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            calls = [m for m in self.outbox.messages()[self.seen :] if m.channel == "call"]
            if calls:
                return calls[-1]
            time.sleep(0.2)
        return None

    def latest_code(self, channel: str) -> str | None:
        return _latest_code(Outbox(self.outbox.path), channel)

    def service_code(self, account: str) -> str:
        import requests

        if not self.api_token:
            raise _Failed("IVR_API_TOKEN: not set; a service code is issued by the API")
        response = requests.post(
            f"{self.url}/api/service-codes",
            json={"account": account},
            headers={"Authorization": f"Bearer {self.api_token}"},
            timeout=10,
        )
        if response.status_code != 201:
            raise _Failed(f"POST /api/service-codes answered {response.status_code}")
        return str(response.json()["code"])


def _service_redis(url: str | None) -> Any:
    """The service's Redis, or a refusal: without it scenarios cannot be isolated from one
    another, and a run whose scenarios meet each other's lockouts would lie."""
    import redis

    from ivr.runtime import connect_redis

    if not url:
        raise IvrError("--url needs the service's Redis (REDIS_URL) to isolate scenarios; not set")
    client = connect_redis(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise IvrError(
            "--url needs the service's Redis to isolate scenarios; REDIS_URL is not "
            f"reachable from here ({type(exc).__name__})"
        ) from None
    return client


class _Run:
    def __init__(self, file: str, target: Any) -> None:
        self.file, self.target = file, target


# -- running files ---------------------------------------------------------------------------


def flows_dir_of(path: Path) -> Path:
    """Scenario files live in `flows/tests/`, beside the flows they test."""
    parent = path.parent
    return parent.parent if parent.resolve().name == "tests" else parent


def run_file(path: Path, url: str | None = None) -> tuple[list[ScenarioResult], Flow, Marks, str]:
    """Play every scenario of one file; returns the results and the flow they tested."""
    spec, marks = load_scenarios(path)
    flow_path = flows_dir_of(path) / f"{spec.flow}.yaml"
    if not flow_path.is_file():
        line, col = marks.get(("flow",), (1, 1))
        raise FlowDefinitionError(
            [Problem(str(path), line, col, "flow", f"no flow file {flow_path}", "")]
        )
    flow, flow_marks = load_flow_with_marks(flow_path)
    results = []
    with tempfile.TemporaryDirectory(prefix="ivr-scenarios-") as work:
        target = _target(spec, url, flow_path.parent, Path(work))
        in_process = isinstance(target, InProcess)
        with _environment(target.worker_env() if in_process else {}), _quiet(in_process):
            for index, scenario in enumerate(spec.scenarios):
                results.append(_play(str(path), target, scenario, marks, index, flow))
    return results, flow, flow_marks, str(flow_path)


def _target(spec: ScenarioFile, url: str | None, flows_dir: Path, work: Path) -> Any:
    if url is None:
        return InProcess(flows_dir, spec.flow, spec.customers, work)
    from ivr.devserver import DevState
    from ivr.settings import load_settings

    return OverHttp(url, load_settings(), DevState.read(Path(".ivr")), spec.customers)


def _play(
    file: str, target: Any, scenario: Scenario, marks: Marks, index: int, flow: Flow
) -> ScenarioResult:
    line, _ = marks.get(("scenarios", index), (None, None))
    result = ScenarioResult(file, line, scenario.name, flow.name)
    call = _Call(_Run(file, target), scenario, marks, index)
    try:
        target.start(call)
        call.play()
    except _Failed as exc:
        result.failure = str(exc)
    result.transcript = call.log
    result.to_queue = call.to_queue
    result.to_authenticated = call.to_authenticated
    for source, field_name, step, at in call.trace:
        result.steps.add(step)
        if source is not None and field_name is not None:
            result.edges.add((source, field_name, step))
        proof = isinstance(flow.steps.get(source or ""), AuthenticateStep)
        if proof and field_name == "next" and result.to_authenticated is None:
            result.to_authenticated = at
    return result


@contextlib.contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    """The in-process service's own log (audit lines, alerts) is not the test's output."""
    if quiet:
        logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        if quiet:
            logging.disable(logging.NOTSET)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- coverage --------------------------------------------------------------------------------


@dataclass
class Coverage:
    flow: Flow
    marks: Marks
    file: str
    steps: set[str] = field(default_factory=set)
    edges: set[Edge] = field(default_factory=set)

    @property
    def all_edges(self) -> list[Edge]:
        return [(s, f, t) for s in self.flow.steps for f, t in self.flow.targets(s)]

    @property
    def edge_percent(self) -> float:
        edges = self.all_edges
        return 100.0 * sum(e in self.edges for e in edges) / len(edges) if edges else 100.0

    @property
    def step_percent(self) -> float:
        return 100.0 * len(self.steps & set(self.flow.steps)) / len(self.flow.steps)

    def position(self, step: str, field_name: str | None = None) -> str:
        path: tuple[str | int, ...] = ("steps", step)
        if field_name is not None and not field_name.startswith("authentication."):
            for part in re.findall(r"[a-z_]+|\[\d+\]", field_name):
                path += (int(part[1:-1]),) if part.startswith("[") else (part,)
        line, col = self.marks.get(path, self.marks.get(("steps", step), (None, None)))
        return f"{self.file}:{line}:{col}"

    def lines(self) -> list[str]:
        edges = self.all_edges
        seen_steps = len(self.steps & set(self.flow.steps))
        seen_edges = sum(e in self.edges for e in edges)
        out = [
            f"coverage of flow {self.flow.name} ({self.file}): steps {seen_steps}/"
            f"{len(self.flow.steps)} ({self.step_percent:.0f}%), edges {seen_edges}/"
            f"{len(edges)} ({self.edge_percent:.0f}%)"
        ]
        for step in self.flow.steps:
            if step not in self.steps:
                out.append(f"  not visited: {self.position(step)} step {step}")
        for source, field_name, target in edges:
            if (source, field_name, target) not in self.edges:
                out.append(
                    f"  not taken:   {self.position(source, field_name)} "
                    f"{source} --{field_name}--> {target}"
                )
        return out

    def to_json(self) -> dict[str, Any]:
        known = set(self.all_edges)
        return {
            "flow": self.flow.name,
            "steps": sorted(self.steps & set(self.flow.steps)),
            "edges": [list(e) for e in sorted(self.edges & known)],
        }


def scenario_files(paths: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for path in paths or (Path("flows/tests"),):
        if path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            files.append(path)
    return files


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def run_tests(
    paths: tuple[Path, ...],
    url: str | None = None,
    min_coverage: float | None = None,
    coverage_out: Path | None = None,
    echo: Any = click.echo,
) -> int:
    """Play, print, and return the exit code: 1 when a scenario failed or edge coverage of a
    flow is below `min_coverage` percent."""
    files = scenario_files(paths)
    if not files:
        raise IvrError("no scenario files (*.yaml) found; they live in flows/tests/")
    coverages: dict[str, Coverage] = {}
    failed = passed = 0
    for file in files:
        try:
            results, flow, marks, flow_file = run_file(file, url)
        except FlowDefinitionError as exc:
            for problem in exc.problems:
                echo(str(problem), err=True)
            failed += 1
            continue
        cov = coverages.setdefault(flow_file, Coverage(flow, marks, flow_file))
        for result in results:
            passed += result.passed
            cov.steps |= result.steps
            cov.edges |= result.edges
            times = (
                f"authenticated {_seconds(result.to_authenticated)}, "
                f"queue {_seconds(result.to_queue)}"
            )
            echo(f"{'PASS' if result.passed else 'FAIL'}  {file}:{result.line}  "
                 f"{result.name}  ({times})")  # fmt: skip
            if not result.passed:
                failed += 1
                echo(f"      {result.failure}")
                echo("      transcript:")
                for line in result.transcript:
                    echo(f"        {line}")
    echo(f"{passed} scenario(s) passed, {failed} failed")
    code = 1 if failed else 0
    if url is not None:
        echo("(coverage is measured in process only: run without --url to see it)")
        return code
    for cov in coverages.values():
        for line in cov.lines():
            echo(line)
        if min_coverage is not None and cov.edge_percent < min_coverage:
            echo(
                f"edge coverage of flow {cov.flow.name} is {cov.edge_percent:.1f}%, "
                f"below --min-coverage {min_coverage:g}%",
                err=True,
            )
            code = 1
    if coverage_out is not None:
        if len(coverages) != 1:
            raise IvrError("--coverage-out writes one flow's coverage: test one flow at a time")
        [cov] = coverages.values()
        coverage_out.write_text(json.dumps(cov.to_json(), indent=2) + "\n")
    return code


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--url",
    help="Play against a running dev or staging service at this base URL, over HTTP. Needs "
    "its Redis (REDIS_URL): before each scenario the test customers' and calling numbers' "
    "failure counts, abuse windows and send caps are deleted there. Never point it at "
    "production.",
)
@click.option(
    "--min-coverage",
    type=click.FloatRange(0, 100),
    help="Fail when a flow's edge coverage is below this percent.",
)
@click.option(
    "--coverage-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the steps and edges visited as JSON (for `ivr flows graph`).",
)
def flows_test(
    paths: tuple[Path, ...], url: str | None, min_coverage: float | None, coverage_out: Path | None
) -> None:
    """Play the scenario tests (default: flows/tests/) and report coverage and caller time."""
    if url is not None and min_coverage is not None:
        raise click.UsageError("--min-coverage needs the in-process run (no --url)")
    try:
        code = run_tests(paths, url, min_coverage, coverage_out)
    except IvrError as exc:
        raise click.ClickException(str(exc)) from None
    if code:
        raise SystemExit(code)
