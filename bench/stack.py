"""The services under test: a private redis-server, gunicorn with the production app and one
rq worker, started as production starts them (`ivr.processes`) and always stopped again."""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from rq import Worker

from bench.plans import FLOW_NAME
from ivr.processes import web_command, worker_command
from ivr.runtime import connect_redis
from ivr.store.server import RedisServer, find_free_port, tail

FLOWS_DIR = Path(__file__).resolve().parents[1] / "flows"
LOOPBACK = "127.0.0.1"
WEB_START_TIMEOUT_S = 30.0
WORKER_START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
BIND_ATTEMPTS = 3


class Child:
    """A child process logging to a file, in its own session so its children stop with it."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path, log: Path) -> None:
        self.log_path = log
        with log.open("ab") as out:
            self._proc = subprocess.Popen(
                argv,
                env=env,
                cwd=workdir,  # no stray .env: settings come from `env` alone
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def exit_code(self) -> int | None:
        return self._proc.poll()

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL the whole group. Safe to call twice."""
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
            try:
                self._proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                # Not reaped yet, so the group id is still ours.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()

    def started_or_raise(self, what: str) -> None:
        code = self.exit_code()
        if code is not None:
            raise RuntimeError(
                f"{what} exited with code {code} at start-up; log:\n{tail(self.log_path)}"
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


@dataclass(frozen=True)
class Services:
    redis_url: str
    base_url: str
    web: Child
    worker: Child
    worker_name: str
    outbox: Path


@contextlib.contextmanager
def services(workdir: Path, web_workers: int, auth_token: str) -> Iterator[Services]:
    """All three started and ready; all stopped on the way out, whatever happened."""
    with _services(workdir, auth_token, lambda bind: web_command(bind, web_workers), {}) as started:
        yield started


@contextlib.contextmanager
def procfile_services(
    workdir: Path, auth_token: str, serve_options: list[str], extra_env: dict[str, str]
) -> Iterator[Services]:
    """The Procfile's two processes as it runs them: `ivr serve` (which execs gunicorn, so its
    pid is the gunicorn master's) with whatever worker count and class it picks, and `ivr
    worker`; `serve_options` are added to `ivr serve`'s command line."""

    def serve(bind: str) -> list[str]:
        host, port = bind.rsplit(":", 1)
        ivr = [sys.executable, "-m", "ivr"]
        return [*ivr, "serve", "--host", host, "--port", port, *serve_options]

    with _services(workdir, auth_token, serve, extra_env) as started:
        yield started


@contextlib.contextmanager
def _services(
    workdir: Path,
    auth_token: str,
    web_argv: Callable[[str], list[str]],
    extra_env: dict[str, str],
) -> Iterator[Services]:
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(RedisServer(workdir / "redis", persist=False)).url
        outbox = workdir / "outbox.jsonl"
        code_key = secrets.token_hex(16)

        def env_for(base_url: str) -> dict[str, str]:
            env = service_env(redis_url, base_url, auth_token, code_key, outbox)
            return env | extra_env

        web, base_url = start_web(web_argv, env_for, workdir)
        stack.enter_context(web)
        name = f"ivr-bench-{secrets.token_hex(6)}"
        worker = Child(
            worker_command(redis_url, "--name", name),
            env_for(base_url),
            workdir,
            workdir / "worker.log",
        )
        stack.enter_context(worker)
        wait_registered(worker, redis_url, name)
        yield Services(redis_url, base_url, web, worker, name, outbox)


def service_env(
    redis_url: str, base_url: str, auth_token: str, code_key: str, outbox: Path
) -> dict[str, str]:
    """The environment of both gunicorn and the worker."""
    env = dict(os.environ)
    # Codes go to this run's outbox, whatever backends the shell running the benchmark has.
    for name in ("IVR_SMS_BACKEND", "IVR_EMAIL_BACKEND", "IVR_CALL_BACKEND"):
        env.pop(name, None)
    env.update(
        {
            "REDIS_URL": redis_url,
            "IVR_PUBLIC_URL": base_url,  # as in production: signatures are checked against it
            "TWILIO_AUTH_TOKEN": auth_token,
            "IVR_FLOWS_DIR": str(FLOWS_DIR),
            "IVR_FLOW": FLOW_NAME,  # the call scripts follow it
            "IVR_CODE_KEY": code_key,  # the default flow offers one-time codes
            "IVR_OUTBOX": str(outbox),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_web(
    web_argv: Callable[[str], list[str]], env_for: Callable[[str], dict[str, str]], workdir: Path
) -> tuple[Child, str]:
    """gunicorn on a free loopback port, once a worker answers; another port if it was taken."""
    for attempt in range(1, BIND_ATTEMPTS + 1):
        port = find_free_port()
        base_url = f"http://{LOOPBACK}:{port}"
        argv = web_argv(f"{LOOPBACK}:{port}")
        web = Child(argv, env_for(base_url), workdir, workdir / "gunicorn.log")
        try:
            wait_answering(web, port)
        except BaseException as exc:
            web.stop()
            taken = "Address already in use" in tail(web.log_path)
            if isinstance(exc, RuntimeError) and taken and attempt < BIND_ATTEMPTS:
                continue
            raise
        return web, base_url
    raise AssertionError("unreachable")


def wait_answering(web: Child, port: int) -> None:
    """Until a gunicorn worker answers HTTP (any status): TCP alone only proves the master
    bound the socket, and the first call must not wait for the app to load."""
    deadline = time.monotonic() + WEB_START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        web.started_or_raise("gunicorn")
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
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
        f"gunicorn did not answer on port {port} within {WEB_START_TIMEOUT_S:g} s "
        f"(last error: {last_error}); log:\n{tail(web.log_path)}"
    )


def wait_registered(worker: Child, redis_url: str, name: str) -> None:
    """Until the worker has registered in Redis: the first call must not wait for its boot."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    with contextlib.closing(connect_redis(redis_url)) as redis:
        while time.monotonic() < deadline:
            worker.started_or_raise("rq worker")
            if any(w.name == name for w in Worker.all(connection=redis)):
                return
            time.sleep(0.1)
    raise RuntimeError(
        f"rq worker {name} did not register within {WORKER_START_TIMEOUT_S:g} s; "
        f"log:\n{tail(worker.log_path)}"
    )
