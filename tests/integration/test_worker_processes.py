"""`ivr worker --processes N`: one command, N rq workers (ivr/worker.py), stopped together.

The command is started as the Procfile starts it (`ivr.processes.worker_command`), and texts
are queued as a webhook queues them (`Possession.request_code`), against a real Redis.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from rq import Queue, Worker
from rq.job import JobStatus

from ivr.flows.engine import CallState
from ivr.outbox import Outbox
from ivr.processes import QUEUE, worker_command
from ivr.runtime import make_abuse_guard, make_possession
from ivr.settings import load_settings
from ivr.store.audit import AuditLog
from ivr.store.customers import Customer, RedisCustomerDirectory
from tests.integration.conftest import CODE_KEY, ManagedProcess, RestartableRedis
from tests.integration.test_worker_resilience import RECOVERY
from tests.integration.worker_jobs import mark, sleep_then_mark
from tests.support import wait_until

Launcher = Callable[..., ManagedProcess]


def start_workers(
    launch: Launcher, url: str, processes: int, env: dict[str, str] | None = None
) -> tuple[ManagedProcess, list[str]]:
    """`ivr worker --processes N` on `url`, once all its workers have registered."""
    name = f"ivr-it-{uuid.uuid4().hex[:12]}"
    command = launch(worker_command(url, "--name", name, "--processes", str(processes)), env)
    names = [f"{name}-{n}" for n in range(1, processes + 1)]
    with redis.Redis.from_url(url) as conn:
        wait_until(
            lambda: (
                {w.name for w in Worker.all(connection=conn)} >= set(names) or not command.running
            ),
            20,
            "the workers did not register",
        )
    assert command.running, command.log_tail()
    return command, names


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_texts_queued_as_the_web_queues_them_all_arrive(
    process_launcher: Launcher, redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.jsonl"
    start_workers(process_launcher, redis_url, 3, {"IVR_OUTBOX": str(outbox)})
    settings = load_settings(code_key=CODE_KEY)
    customers, audit = RedisCustomerDirectory(rdb), AuditLog(rdb)
    possession = make_possession(
        settings, rdb, customers, audit, make_abuse_guard(settings, rdb, audit)
    )
    phones = [f"+1415555{n:04d}" for n in range(12)]
    for n, phone in enumerate(phones):
        customers.add(Customer(account=f"{31000000 + n}", phone=phone))
        state = CallState(call_sid=f"CA{n:032x}", caller="+15005550006", step="sms-code", seq=1)
        state.account = f"{31000000 + n}"
        assert possession.request_code(state, "sms_otp", 30) == "queued"
    wait_until(
        lambda: {m.to for m in Outbox(outbox).messages()} == set(phones),
        20,
        "every text did not reach its phone",
    )
    assert len(Outbox(outbox).messages()) == len(phones)  # one each, none twice
    assert all(possession.codes.delivery(f"CA{n:032x}", "sms_otp") == "sent" for n in range(12))


def test_the_processes_work_at_the_same_time(
    process_launcher: Launcher, redis_url: str, rdb: redis.Redis
) -> None:
    """Three slow sends (a provider taking its time) do not wait for one another."""
    start_workers(process_launcher, redis_url, 3)
    queue = Queue(QUEUE, connection=rdb)
    jobs = [queue.enqueue(sleep_then_mark, 4.0, f"it:slow-{n}") for n in range(3)]
    wait_until(
        lambda: all(job.get_status() == JobStatus.STARTED for job in jobs),
        3.5,
        "the three jobs were not all running at once",
    )
    wait_until(lambda: all(rdb.get(f"it:slow-{n}") for n in range(3)), 10, "the jobs did not end")


def test_sigterm_stops_every_process_and_unregisters_them(
    process_launcher: Launcher, redis_url: str, rdb: redis.Redis
) -> None:
    command, names = start_workers(process_launcher, redis_url, 3)
    pids = children(command.pid)
    assert len(pids) == 3
    Queue(QUEUE, connection=rdb).enqueue(mark, "it:before-stop")
    wait_until(lambda: rdb.get("it:before-stop"), 10, "the job did not run")
    os.kill(command.pid, signal.SIGTERM)
    assert command.stop() == 0, command.log_tail()
    assert not any(alive(pid) for pid in pids)
    assert not {w.name for w in Worker.all(connection=rdb)} & set(names)


def test_a_worker_that_dies_stops_the_command_non_zero(
    process_launcher: Launcher, redis_url: str
) -> None:
    """As one worker would: the platform restarts the whole command, not a short-handed one."""
    command, _ = start_workers(process_launcher, redis_url, 2)
    first, second = children(command.pid)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not command.running, 15, "the command went on short-handed")
    assert command.returncode != 0
    assert not alive(second)
    assert "stopped unexpectedly" in command.log()
    assert "Traceback" not in command.log()


def test_the_processes_ride_out_a_redis_restart(
    private_redis: RestartableRedis, process_launcher: Launcher
) -> None:
    command, _ = start_workers(process_launcher, private_redis.url, 2)
    private_redis.kill()
    time.sleep(2)
    private_redis.start()
    conn = private_redis.client()
    queue = Queue(QUEUE, connection=conn)
    for n in range(4):
        queue.enqueue(mark, f"it:after-{n}")
    wait_until(
        lambda: all(conn.get(f"it:after-{n}") for n in range(4)),
        RECOVERY,
        "jobs queued after the restart did not run",
    )
    assert command.running, command.log_tail()
    assert "unhandled exception" not in command.log()
