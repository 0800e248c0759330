"""Fixtures for the integration tier: a real redis-server, real gunicorn, real rq workers.

Nothing here is mocked and nothing skips: if redis-server, gunicorn or rq is missing, or a process
will not start, the test errors with the process's log, because a silently skipped integration
suite is indistinguishable from a passing one.

Every process is started in its own session (so a SIGKILL can take its children too), logs to a
file, and is stopped at teardown even when the test failed.  When a test fails, the tail of each
process log it used is attached to the failure report.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import http.client
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

import pytest
import redis
from rq import Worker

from ivr.auth.knowledge import SecretHasher, enrol
from ivr.processes import web_command, worker_command
from ivr.store.server import RedisServer, find_free_port, tail

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
FLOWS_DIR = REPO_ROOT / "flows"

AUTH_TOKEN = "integration-test-token"
PEPPER = "integration-pepper"
# The default flow offers one-time and service codes, so every web and worker process needs a
# code key; the API token lets a test ask for service codes as the customer's web backend does.
CODE_KEY = "integration-code-key-0123456789"
API_TOKEN = "integration-api-token-0123456789"

WEB_START_TIMEOUT = 15.0
WORKER_START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_BIND_ATTEMPTS = 3

# Every process ever started by this module, in order.  The autouse fixture below stops the ones
# a test started (and attaches their logs to its failure); atexit is the last resort.
_STARTED: list[ManagedProcess] = []
_log_root: Path | None = None


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class ManagedProcess:
    """A child process with its output in a log file, stoppable exactly once, idempotently."""

    kind = "process"

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self._proc: subprocess.Popen[bytes] = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _STARTED.append(self)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def log(self) -> str:
        """The whole log so far (stdout and stderr interleaved)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (graceful shutdown), then SIGKILL the whole process group after ``timeout``.

        Returns the exit code.  Safe to call repeatedly and on a process that already exited.
        """
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # Kill the whole group: gunicorn workers / rq work horses must not outlive it.
                # The leader is not reaped yet, so the group id is certainly still ours.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
        return self._proc.wait()

    def _fail(self, message: str) -> NoReturn:
        """Stop the process and raise with its log, so a failed start explains itself."""
        self.stop(timeout=2)
        raise RuntimeError(
            f"{self.kind} {message}\ncommand: {' '.join(self.argv)}\n"
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} log={self.log_path}>"


class WebProcess(ManagedProcess):
    """gunicorn serving the real WSGI app on 127.0.0.1."""

    kind = "web"

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path, port: int) -> None:
        self.port = port
        super().__init__(argv, env, log_path)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = WEB_START_TIMEOUT) -> None:
        """Wait until the port accepts TCP *and* a worker answers HTTP.

        TCP alone only proves the gunicorn master bound the socket; the app is loaded later in
        the worker, and an import error there would surface as a confusing reset in the test.
        Any HTTP status (404 included) proves the app is up.
        """
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                self._fail(f"exited with code {self.returncode} during startup")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", "/", headers={"User-Agent": "ivr-integration-ready-probe"})
                    conn.getresponse().read()
                    return
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                last_error = exc
            time.sleep(0.1)
        self._fail(f"not serving on {self.base_url} within {timeout:g}s (last error: {last_error})")

    def worker_pid(self) -> int:
        """The one gunicorn worker (a child of the master, as /proc says)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])


class WorkerProcess(ManagedProcess):
    """An rq worker (with the scheduler) consuming the ``ivr`` queue."""

    kind = "worker"

    def __init__(
        self, argv: list[str], env: Mapping[str, str], log_path: Path, name: str, redis_url: str
    ) -> None:
        self.name = name
        self.redis_url = redis_url
        super().__init__(argv, env, log_path)

    def wait_registered(self, timeout: float = WORKER_START_TIMEOUT) -> None:
        """Wait until this worker (by its unique name) is registered in Redis."""
        deadline = time.monotonic() + timeout
        with redis.Redis.from_url(self.redis_url) as conn:
            while time.monotonic() < deadline:
                if not self.running:
                    self._fail(f"exited with code {self.returncode} during startup")
                if any(w.name == self.name for w in Worker.all(connection=conn)):
                    return
                time.sleep(0.1)
        self._fail(f"{self.name} did not register in {self.redis_url} within {timeout:g}s")


def service_env(
    redis_url: str,
    env_extra: Mapping[str, str] | None = None,
    *,
    auth_token: str = AUTH_TOKEN,
) -> dict[str, str]:
    """Environment shared by web and worker processes: the real settings, test values."""
    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": redis_url,
            "TWILIO_AUTH_TOKEN": auth_token,
            "IVR_FLOWS_DIR": str(FLOWS_DIR),
            "IVR_PEPPER": PEPPER,
            "IVR_CODE_KEY": CODE_KEY,
            "IVR_API_TOKEN": API_TOKEN,
            # Never the checkout's .ivr/outbox.jsonl; a test that reads the outbox passes its own.
            "IVR_OUTBOX": str(_log_dir(None) / "outbox.jsonl"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(env_extra or {})
    return env


def _log_dir(log_dir: Path | None) -> Path:
    if log_dir is not None:
        return log_dir
    if _log_root is not None:
        return _log_root
    return Path(tempfile.mkdtemp(prefix="ivr-integration-"))


def start_web(
    redis_url: str,
    env_extra: Mapping[str, str] | None = None,
    *,
    auth_token: str = AUTH_TOKEN,
    log_dir: Path | None = None,
) -> WebProcess:
    """Start gunicorn with the real app on a free loopback port and wait until it serves.

    Raises RuntimeError with the log tail if it does not come up.
    """
    env = service_env(redis_url, env_extra, auth_token=auth_token)
    directory = _log_dir(log_dir)
    for attempt in range(1, _BIND_ATTEMPTS + 1):
        port = find_free_port()
        argv = web_command(f"127.0.0.1:{port}", 1, "--access-logfile", "-")
        proc = WebProcess(argv, env, directory / f"web-{port}.log", port)
        try:
            proc.wait_ready()
        except RuntimeError:
            # The free port can be taken between our probe and gunicorn's bind: try another.
            if attempt < _BIND_ATTEMPTS and "Address already in use" in proc.log():
                continue
            raise
        return proc
    raise AssertionError("unreachable")


def start_worker(
    redis_url: str,
    env_extra: Mapping[str, str] | None = None,
    *,
    auth_token: str = AUTH_TOKEN,
    log_dir: Path | None = None,
) -> WorkerProcess:
    """Start a real worker as the Procfile does (``ivr worker``, an rq worker with its scheduler
    on queue ``ivr``) and wait until it has registered.

    ``python -m ivr`` is the same entry point as the ``ivr`` console script, but does not
    depend on the venv's bin/ being on PATH.
    """
    name = f"ivr-it-{uuid.uuid4().hex[:12]}"
    argv = worker_command(redis_url, "--name", name)
    env = service_env(redis_url, env_extra, auth_token=auth_token)
    proc = WorkerProcess(argv, env, _log_dir(log_dir) / f"{name}.log", name, redis_url)
    proc.wait_registered()
    return proc


@atexit.register
def _stop_leftovers() -> None:
    for proc in _STARTED:
        with contextlib.suppress(Exception):
            proc.stop(timeout=2)


class RestartableRedis:
    """A redis-server of the test's own (never the session one) that goes away and comes back on
    the same port: `stop` as a maintenance restart or failover stops it (SIGTERM; with `persist`
    its data is saved and read again), `kill` as a crash or an OOM kill does (SIGKILL)."""

    def __init__(self, data_dir: Path, *, persist: bool) -> None:
        self.data_dir = data_dir
        self.persist = persist
        self.server = RedisServer(data_dir, persist=persist)
        self.url = self.server.start()
        self.port = self.server.port
        self.back = threading.Event()
        self._timer: threading.Timer | None = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        assert self.server.pid is not None
        os.kill(self.server.pid, signal.SIGKILL)
        self.server.stop()  # reaps it

    def start(self) -> None:
        self.server = RedisServer(self.data_dir, port=self.port, persist=self.persist)
        self.server.start()
        self.back.set()

    def start_in(self, seconds: float) -> None:
        """Start again `seconds` from now, in the background; `back` is set once it is up."""
        self.back.clear()
        self._timer = threading.Timer(seconds, self.start)
        self._timer.start()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.join()  # a server started after the test would outlive it
        self.stop()


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration, so ``-m "not integration"`` deselects the tier.

    This hook sees the whole session's items, hence the path filter.
    """
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


_FIRST_PROCESS_KEY = pytest.StashKey[int]()


def _started_by(item: pytest.Item) -> list[ManagedProcess]:
    first = item.stash.get(_FIRST_PROCESS_KEY, None)
    return [] if first is None else _STARTED[first:]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the log tails of the test's processes to a failure (they are still running)."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for proc in _started_by(item):
            report.sections.append((f"{proc.kind} log ({proc.log_path})", proc.log_tail(60)))
    return report


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _process_log_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    global _log_root  # helpers called directly by a test still log under the session tmp
    _log_root = tmp_path_factory.mktemp("process-logs")
    yield _log_root
    _log_root = None


@pytest.fixture(autouse=True)
def _stop_processes_started_by_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Remember what each test starts (for failure logs) and stop all of it at teardown,
    including processes started with the helpers directly rather than via fixtures."""
    request.node.stash[_FIRST_PROCESS_KEY] = len(_STARTED)
    yield
    errors: list[BaseException] = []
    for proc in _started_by(request.node):
        try:
            proc.stop()
        except BaseException as exc:  # keep stopping the others, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private, non-persisting redis-server for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), persist=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session server, emptied (FLUSHALL) so each test starts from nothing."""
    with redis.Redis.from_url(redis_server.url) as conn:
        conn.flushall()
    return redis_server.url


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test's Redis, to look at what the web processes and workers wrote."""
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A redis-server that a test may kill and start again, its data gone."""
    server = RestartableRedis(tmp_path / "private-redis", persist=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def restarting_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A persisting redis-server that a test may stop and start again, its data kept."""
    server = RestartableRedis(tmp_path / "restarting-redis", persist=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def auth_token() -> str:
    """The Twilio auth token the web processes verify signatures with."""
    return AUTH_TOKEN


@pytest.fixture
def web_factory(redis_url: str, auth_token: str, tmp_path: Path) -> Callable[..., WebProcess]:
    """``web_factory(env_extra=None)`` starts another web process on this test's Redis.

    Everything it starts is stopped at teardown by the autouse fixture.
    """

    def factory(env_extra: Mapping[str, str] | None = None) -> WebProcess:
        return start_web(redis_url, env_extra, auth_token=auth_token, log_dir=tmp_path)

    return factory


@pytest.fixture
def worker_factory(redis_url: str, auth_token: str, tmp_path: Path) -> Callable[..., WorkerProcess]:
    """``worker_factory(env_extra=None)`` starts another rq worker on this test's Redis."""

    def factory(env_extra: Mapping[str, str] | None = None) -> WorkerProcess:
        return start_worker(redis_url, env_extra, auth_token=auth_token, log_dir=tmp_path)

    return factory


@pytest.fixture
def web(web_factory: Callable[..., WebProcess]) -> WebProcess:
    """One real gunicorn + app process on the test's Redis."""
    return web_factory()


@pytest.fixture
def web_pair(web_factory: Callable[..., WebProcess]) -> tuple[WebProcess, WebProcess]:
    """Two independent app processes sharing one Redis: a call served alternately by both must
    behave exactly like a call served by one (no per-process state)."""
    return web_factory(), web_factory()


@pytest.fixture
def worker(worker_factory: Callable[..., WorkerProcess]) -> WorkerProcess:
    """One real rq worker (with scheduler) on queue ``ivr`` of the test's Redis."""
    return worker_factory()


@pytest.fixture(scope="session")
def pepper() -> str:
    """The IVR_PEPPER every web and worker process is started with (hash seeded secrets with it)."""
    return PEPPER


@pytest.fixture(scope="session")
def code_key() -> str:
    """The IVR_CODE_KEY every web and worker process is started with."""
    return CODE_KEY


@pytest.fixture(scope="session")
def api_token() -> str:
    """The IVR_API_TOKEN every web process is started with (`Authorization: Bearer ...`)."""
    return API_TOKEN


@pytest.fixture
def web_on_redis(auth_token: str, tmp_path: Path) -> Callable[..., WebProcess]:
    """``web_on_redis(url, env_extra=None)`` starts a web process on *another* Redis than the
    session one (e.g. a private server a test will stop); stopped at teardown like the others."""

    def factory(url: str, env_extra: Mapping[str, str] | None = None) -> WebProcess:
        return start_web(url, env_extra, auth_token=auth_token, log_dir=tmp_path)

    return factory


@pytest.fixture
def worker_on_redis(auth_token: str, tmp_path: Path) -> Callable[..., WorkerProcess]:
    """``worker_on_redis(url, env_extra=None)`` starts a worker, as the Procfile and `ivr dev`
    do, on *another* Redis than the session one (e.g. a private server a test will restart)."""

    def factory(url: str, env_extra: Mapping[str, str] | None = None) -> WorkerProcess:
        return start_worker(url, env_extra, auth_token=auth_token, log_dir=tmp_path)

    return factory


@pytest.fixture
def process_launcher(redis_url: str, auth_token: str, tmp_path: Path) -> Callable[..., Any]:
    """``process_launcher(argv, env_extra=None, serves=False)`` runs `argv` (each ``{port}`` in
    it replaced by one free port) with the service environment on this test's Redis, such as
    ``ivr serve`` or a bare gunicorn. With ``serves`` it is a web server: a `WebProcess`
    once it serves. Stopped at teardown like the others."""

    def factory(
        argv: list[str], env_extra: Mapping[str, str] | None = None, *, serves: bool = False
    ) -> ManagedProcess:
        port = find_free_port()
        argv = [arg.replace("{port}", str(port)) for arg in argv]
        env = service_env(redis_url, env_extra, auth_token=auth_token)
        log_path = tmp_path / f"process-{port}.log"
        if not serves:
            return ManagedProcess(argv, env, log_path)
        web = WebProcess(argv, env, log_path, port)
        web.wait_ready()
        return web

    return factory


# --------------------------------------------------------------------------------------------
# Customers' secrets
# --------------------------------------------------------------------------------------------

#: The PIN the integration tests' customers have on file.
PIN = "583920"


@pytest.fixture(scope="module")
def pin_hash(pepper: str) -> str:
    """The argon2id hash of PIN, made once per module: argon2 is deliberately slow."""
    return enrol(SecretHasher(pepper=pepper), "pin", PIN)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Collect what is still unreferenced once every test has run, and name it.

    A socket left in a reference cycle by some thread's last request is only finalised by
    pytest's own final collection, where filterwarnings=error turns its ResourceWarning into a
    crash of a run whose tests all passed, with no test to blame. Collected here, it is printed
    instead; a leak inside a test still fails that test.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    for warning in caught:
        print(f"\nat the end of the session: {warning.message}")
