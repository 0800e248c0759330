"""Start-up that fails fast and clearly (issue 9, 3): `ivr serve`, `ivr worker` and the
gunicorn the Procfile's web process runs, as real processes. A bad setting or an unreachable
Redis is one `Error:` line a problem, all of them at once, never a traceback, and a non-zero
exit; neither `ivr serve` nor `ivr worker` starts on a Redis it cannot reach."""

from __future__ import annotations

import subprocess
import sys

from ivr.processes import web_command
from ivr.store.server import find_free_port
from tests.integration.conftest import REPO_ROOT, service_env

#: Seconds a refusal may take: connecting to a closed port is refused at once.
REFUSAL = 20

BAD = {"REDIS_URL": "localhost:6379", "IVR_SESSION_TTL": "5", "IVR_PIN_MIN_LENGTH": "three"}
UNREACHABLE = "redis://:hunter2@127.0.0.1:{port}/0"


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=REFUSAL
    )


def ivr(*args: str) -> list[str]:
    return [sys.executable, "-m", "ivr", *args]


def production_env(**extra: str) -> dict[str, str]:
    env = service_env(UNREACHABLE.format(port=find_free_port()))
    env["IVR_PUBLIC_URL"] = "https://ivr.example.com"
    env.update(extra)
    return env


def assert_refused(done: subprocess.CompletedProcess[str], *variables: str) -> list[str]:
    output = done.stdout + done.stderr
    lines = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert done.returncode != 0, output
    assert "Traceback" not in output
    assert sorted(line.split(":")[1].strip() for line in lines) == sorted(variables), output
    return lines


def test_serve_lists_every_bad_setting_and_does_not_start() -> None:
    done = run(ivr("serve", "--port", str(find_free_port())), production_env(**BAD))
    assert_refused(done, *BAD)
    assert done.stdout + done.stderr == "".join(
        f"{line}\n" for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")
    )


def test_serve_refuses_the_browser_phone() -> None:
    """/dev/phone signs webhooks for whoever opens it: a production service never serves it."""
    done = run(ivr("serve", "--port", str(find_free_port())), production_env(IVR_DEV_PHONE="1"))
    (line,) = assert_refused(done, "IVR_DEV_PHONE")
    assert "only `ivr dev`" in line


def test_worker_lists_every_bad_setting() -> None:
    assert_refused(run(ivr("worker"), production_env(**BAD)), *BAD)


def test_serve_refuses_an_unreachable_redis_naming_it_without_its_password() -> None:
    env = production_env()
    done = run(ivr("serve", "--port", str(find_free_port())), env)
    (line,) = assert_refused(done, "REDIS_URL")
    assert env["REDIS_URL"].replace("hunter2", "***") in line
    assert "hunter2" not in done.stdout + done.stderr


def test_worker_refuses_an_unreachable_redis_naming_it_without_its_password() -> None:
    env = production_env()
    done = run(ivr("worker"), env)
    (line,) = assert_refused(done, "REDIS_URL")
    assert "cannot reach Redis at redis://:***@127.0.0.1:" in line
    assert "hunter2" not in done.stdout + done.stderr


def test_gunicorn_reports_a_broken_configuration_without_tracebacks() -> None:
    """What the Procfile's web process runs, past `ivr serve`'s checks: bad settings are their
    lines, said once by the master, and gunicorn stops before booting a worker (exit 4). With
    the check left to the workers, gunicorn 25.3 crashed with a traceback (exit 1) in about one
    run in ten, reaping the two failed workers at once."""
    argv = web_command(f"127.0.0.1:{find_free_port()}", 2)
    done = run(argv, production_env(IVR_SESSION_TTL="5", IVR_PIN_MIN_LENGTH="three"))
    output = done.stdout + done.stderr
    assert done.returncode == 4, output  # gunicorn's "App failed to load"
    assert "Traceback" not in output
    assert output.count("Error: IVR_SESSION_TTL: ") == 1, output
    assert output.count("Error: IVR_PIN_MIN_LENGTH: ") == 1, output
    assert "Booting worker" not in output
    # Measured on the original code: 68 lines with two tracebacks for these two workers.
    assert len(output.splitlines()) <= 20, output
