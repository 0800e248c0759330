"""Fixtures for the unit tests, in the style of the Flask tutorial: an app on fakeredis, its test
client, its runtime, two demo customers and a factory for simulated callers.

Nothing here is autouse, so test modules that need none of it (pure unit tests) are unaffected.
Helpers that are not fixtures and serve the integration tests too live in `tests.support`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker

from ivr.app import create_app
from ivr.auth.possession import CodePolicy, Possession
from ivr.dev.customers import DemoCustomer, customer_record
from ivr.flows.engine import CallState, Engine
from ivr.processes import QUEUE
from ivr.runtime import Runtime
from ivr.runtime import runtime as current_runtime
from ivr.settings import ENV_NAMES
from ivr.simulator import CallPlayer, Gather, Keys, WsgiTransport
from ivr.store.audit import AuditLog
from ivr.store.customers import Customer, RedisCustomerDirectory
from ivr.store.send_caps import SendLimiter, SendLimits
from tests.engine_fakes import DEFAULT, FakePorts, bank_ports
from tests.support import (
    CALLER,
    DAY,
    EMAIL_FLOW,
    KEY,
    LIMITS,
    SID,
    SID_A,
    T0,
    TEN_MINUTES,
    Handset,
    StrictAnswer,
    gather_action,
    lax_abuse_guard,
    make_player,
    sign,
    verbs,
)
from tests.support import redis_contents as redis_contents  # still importable from here

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWS_DIR = REPO_ROOT / "flows"

TOKEN = "unit-test-auth-token-0123456789ab"
PEPPER = "unit-test-pepper-0123"
#: The default flow offers one-time and service codes, so every app needs a code key.
CODE_KEY = "unit-test-code-key-0123456789"
API_TOKEN = "unit-test-api-token-0123"
BASE_URL = "http://localhost"

#: Settings every unit-test app gets: cheap argon2 so a whole call takes milliseconds.
BASE_CONFIG: dict[str, Any] = {
    "twilio_auth_token": TOKEN,
    "argon2_memory_kib": 1024,
    "argon2_time_cost": 1,
    "flows_dir": FLOWS_DIR,
    "pepper": PEPPER,
    "code_key": CODE_KEY,
    "api_token": API_TOKEN,
}


ALICE = DemoCustomer(
    account="12345678",
    phone="+14155550100",
    pin="583920",
    passcode="purple elephant 42",
    name="Alice Example",
    address="1 Market Street, San Francisco",
    email="alice@example.com",
)
BOB = DemoCustomer(
    account="87654321",
    phone="+14155550199",
    pin="902714",
    passcode="green giraffe 17",
    name="Bob Example",
    address="2 Mission Street, San Francisco",
    email="bob@example.com",
)


def make_app(redis: Any, **overrides: Any) -> Flask:
    """An app like the `app` fixture's, with some settings changed."""
    return create_app({**BASE_CONFIG, **overrides}, redis=redis)


def enrol(rt: Runtime, who: DemoCustomer) -> Customer:
    """Store `who` the way enrolment does: secrets only as argon2id hashes (passcode normalised)."""
    customer = customer_record(who, rt.hasher)
    rt.customers.add(customer)
    return customer


@pytest.fixture
def redis() -> Iterator[fakeredis.FakeRedis]:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    yield client
    client.close()


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    """Where this test's SMS, email and calls go (the development outbox), never `.ivr/`."""
    return tmp_path / "outbox.jsonl"


@pytest.fixture
def app(redis: fakeredis.FakeRedis, outbox_path: Path) -> Flask:
    flask_app = make_app(redis, outbox=outbox_path)
    flask_app.config["TESTING"] = True
    return flask_app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runtime(app: Flask) -> Iterator[Runtime]:
    with app.app_context():
        yield current_runtime()


@pytest.fixture
def customers(runtime: Runtime) -> dict[str, DemoCustomer]:
    """Two enrolled customers, keyed by account number."""
    for who in (ALICE, BOB):
        enrol(runtime, who)
    return {ALICE.account: ALICE, BOB.account: BOB}


PlayerFactory = Callable[..., CallPlayer]


@pytest.fixture
def player(app: Flask) -> PlayerFactory:
    """Build a simulated caller: `player(from_number=..., call_sid=..., app=other_app)`."""

    def factory(
        from_number: str = "+15005550006", *, app: Flask | None = None, **options: Any
    ) -> CallPlayer:
        target = app if app is not None else default_app
        return make_player(
            BASE_URL, TOKEN, WsgiTransport(target), from_number=from_number, **options
        )

    default_app = app
    return factory


def run_jobs(redis: Any, logging_level: str = "WARNING") -> bool:
    """Run every job queued on `redis` now, in this process, as `rq worker --burst` would.

    `SimpleWorker` does not fork, so fakeredis works; the signal handlers rq installs are put
    back afterwards. Jobs read their settings from the environment: use `worker_env`.
    Returns whether any job ran.
    """
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker = SimpleWorker([Queue(QUEUE, connection=redis)], connection=redis)
        return worker.work(burst=True, logging_level=logging_level)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No IVR variable from the developer's shell, and an empty working directory (so no `.env`
    and no `.ivr/`); returns that directory."""
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, clean_env: Path, outbox_path: Path) -> Path:
    """The environment a worker's jobs read their settings from, matching the `app` fixture:
    the same code key, the outbox for every channel, nothing else (`clean_env`). Returns the
    outbox path."""
    monkeypatch.setenv("IVR_CODE_KEY", CODE_KEY)
    monkeypatch.setenv("IVR_OUTBOX", str(outbox_path))
    for backend in ("IVR_SMS_BACKEND", "IVR_EMAIL_BACKEND", "IVR_CALL_BACKEND"):
        monkeypatch.setenv(backend, "outbox")
    return outbox_path


# --------------------------------------------------------------------------------------------
# Voice webhooks driven request by request
# --------------------------------------------------------------------------------------------


def call_params(
    call_sid: str = SID, from_number: str = ALICE.phone, **extra: str
) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": "AC" + "5e" * 16,
        "From": from_number,
        "To": "+15005550001",
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def signed_post(
    client: FlaskClient,
    path: str,
    params: dict[str, str],
    *,
    signed_url: str | None = None,
    token: str = TOKEN,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST `params` to `path` on http://localhost, signed for `signed_url` (default: that URL)."""
    url = signed_url if signed_url is not None else BASE_URL + path
    all_headers = {**sign(token, url, params), **(headers or {})}
    return client.post(path, data=params, headers=all_headers, base_url=BASE_URL)


class Caller:
    """A call driven request by request through the test client, following the Gather actions."""

    def __init__(self, client: FlaskClient, call_sid: str = SID, from_number: str = ALICE.phone):
        self.client = client
        self.call_sid = call_sid
        self.from_number = from_number
        self.action: str | None = None
        self.last: Any = None

    def params(self, **extra: str) -> dict[str, str]:
        return call_params(self.call_sid, self.from_number, **extra)

    def start(self) -> Any:
        return self._post("/voice", self.params())

    def answer(self, **given: str) -> Any:
        assert self.action is not None, "no question pending"
        return self._post(self.action, self.params(**given))

    def post(self, path: str, **given: str) -> Any:
        return signed_post(self.client, path, self.params(**given))

    def _post(self, path: str, params: dict[str, str]) -> Any:
        response = signed_post(self.client, path, params)
        assert response.status_code == 200, response.data
        self.last = response
        if any(isinstance(v, Gather) for v in verbs(response.data)):
            self.action = gather_action(response.data)
        else:
            self.action = None
        return response

    def to(self, step: str) -> Caller:
        """Drive the call (as Alice) until it waits at `step`."""
        self.start()
        if step == "identify":
            return self
        self.answer(Digits=ALICE.account)
        if step == "choose_method":
            return self
        if step in ("pin", "passcode"):
            self.answer(Digits="1" if step == "pin" else "2")
            return self
        assert step == "main_menu", step
        self.answer(Digits="1")
        self.answer(Digits=ALICE.pin)
        return self


PIN_CALL = (Keys(ALICE.account + "#"), Keys("1"), Keys(ALICE.pin + "#"), Keys("1"))


# --------------------------------------------------------------------------------------------
# Possession factors without a call
# --------------------------------------------------------------------------------------------


def customer(who: DemoCustomer, **changes: Any) -> Customer:
    fields = {"account": who.account, "phone": who.phone, "email": who.email, "name": who.name}
    return Customer(**(fields | changes))


def state(call_sid: str = SID_A, account: str | None = ALICE.account, seq: int = 0) -> CallState:
    return CallState(call_sid=call_sid, caller=CALLER, step="sms_code", seq=seq, account=account)


@pytest.fixture
def directory(redis: Any) -> RedisCustomerDirectory:
    found = RedisCustomerDirectory(redis)
    found.add(customer(ALICE))
    found.add(customer(BOB))
    return found


@pytest.fixture
def now() -> list[float]:
    """The controlled clock: tests move `now[0]`."""
    return [T0]


def possession_with(
    redis: Any,
    directory: RedisCustomerDirectory,
    now: list[float],
    *,
    key: str | None = KEY,
    limits: SendLimits = LIMITS,
    verify: dict[str, Any] | None = None,
) -> Possession:
    policy = CodePolicy(key=key, digits=6, ttl=TEN_MINUTES, service_digits=8, service_ttl=DAY)
    return Possession(
        redis,
        directory,
        policy,
        SendLimiter(redis, limits),
        AuditLog(redis),
        lax_abuse_guard(redis, AuditLog(redis)),
        verify,
        clock=lambda: now[0],
    )


@pytest.fixture
def possession(redis: Any, directory: RedisCustomerDirectory, now: list[float]) -> Possession:
    return possession_with(redis, directory, now)


# --------------------------------------------------------------------------------------------
# Whole calls that step up with a code or a call back
# --------------------------------------------------------------------------------------------


def up_to_card_check(
    pin: str = ALICE.pin, account: str = ALICE.account
) -> list[tuple[str, StrictAnswer]]:
    """Identify, choose the PIN, key it in, then ask about a card ("2")."""
    return [
        ("identify", Keys(account + "#")),
        ("choose_method", Keys("1")),
        ("pin", Keys(pin + "#")),
        ("main_menu", Keys("2")),
    ]


@pytest.fixture
def email_app(redis: Any, outbox_path: Path) -> Flask:
    """The same service on tests/flows/email.yaml: `caller(app=email_app)` plays it."""
    flask_app = make_app(redis, outbox=outbox_path, flows_dir=EMAIL_FLOW.parent, flow="email")
    flask_app.config["TESTING"] = True
    return flask_app


@pytest.fixture
def handset(worker_env: Path) -> Handset:
    return Handset(worker_env)


@pytest.fixture
def caller(
    player: PlayerFactory,
    runtime: Runtime,
    customers: dict[str, DemoCustomer],
    worker_env: Path,
) -> Callable[..., CallPlayer]:
    """A simulated caller (Alice's phone by default) whose holds let the worker run.

    `caller(worker=False)`: no worker ever runs; `caller(on_pause=f)`: `f()` runs at each hold
    before the worker does.
    """

    def make(
        from_number: str = ALICE.phone,
        *,
        worker: bool = True,
        on_pause: Callable[[], None] | None = None,
        **options: Any,
    ) -> CallPlayer:
        def observer(kind: str, line: str) -> None:
            if kind != "pause":
                return
            if on_pause is not None:
                on_pause()
            if worker:
                run_jobs(runtime.redis)

        return player(from_number, pause_scale=0, observer=observer, **options)

    return make


# --------------------------------------------------------------------------------------------
# The pure call engine on its fake Ports (tests.engine_fakes)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def ports() -> FakePorts:
    return bank_ports()


@pytest.fixture
def engine(ports: FakePorts) -> Engine:
    return Engine(DEFAULT, ports)
