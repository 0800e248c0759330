"""The worker's CPU per text: `python -m bench.worker [--texts 300] [--rate 0] [-- OPTIONS]`.

It starts a private redis-server and one `ivr worker` command (`ivr.processes.worker_command`,
the Procfile's process, with the outbox backend: no provider round trip), seeds one customer per
text, and queues the sends exactly as a webhook does (`Possession.request_code`, so each job
has its delivery record, send caps and job options). It prints the CPU the worker command and
every process under it (scheduler, work horses, pool processes) spent per text, read from
/proc (utime + stime of the live processes, cutime + cstime of the reaped ones) between the
moment the worker is idle and the moment the last text is in the outbox, less the idle CPU of
as long a wait. `--rate` queues the texts at that many per second rather than all at once, and
the send latency (queued -> in the outbox: the worker's part of a caller's hold) is printed as
p50/p99. OPTIONS go to `ivr worker` (e.g. `-- --processes 4`). CPU, not wall time, is the
figure: the machine is shared.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rq import Worker

from bench.procstat import tree_cpu
from ivr.flows.engine import CallState
from ivr.outbox import Outbox
from ivr.processes import worker_command
from ivr.runtime import connect_redis, make_abuse_guard, make_possession
from ivr.settings import load_settings
from ivr.store.audit import LOGGER as audit_logger
from ivr.store.audit import AuditLog
from ivr.store.customers import Customer, RedisCustomerDirectory
from ivr.store.server import RedisServer

STEP = "sms-code"
MAX_WAIT = 30


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


@contextmanager
def worker_process(url: str, env: dict[str, str], log: Path, options: list[str]) -> Iterator[int]:
    name = f"bench-{os.getpid()}"
    argv = worker_command(url, "--name", name, *options)
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        redis = connect_redis(url)
        deadline = time.monotonic() + 30
        while not any(w.name.startswith(name) for w in Worker.all(connection=redis)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start; see {log}")
            time.sleep(0.1)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except Exception:
            proc.kill()
            proc.wait()


def run(texts: int, rate: float, options: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="ivr-bench-worker-") as tmp:
        work = Path(tmp)
        server = RedisServer(work / "redis", persist=False)
        url = server.start()
        try:
            outbox = work / "outbox.jsonl"
            env = dict(os.environ)
            env.update(
                REDIS_URL=url,
                IVR_CODE_KEY="bench-code-key-0123456789",
                IVR_OUTBOX=str(outbox),
                IVR_SEND_LIMIT_PREFIX="100000",
            )
            os.environ.update(env)
            logging.getLogger(audit_logger).setLevel(logging.WARNING)
            settings = load_settings()
            redis = connect_redis(url)
            customers = RedisCustomerDirectory(redis)
            audit = AuditLog(redis)
            possession = make_possession(
                settings, redis, customers, audit, make_abuse_guard(settings, redis, audit)
            )
            phones = [f"+1415{7000000 + i:07d}" for i in range(texts)]
            for i, phone in enumerate(phones):
                customers.add(Customer(account=f"{40000000 + i}", phone=phone))
            with worker_process(url, env, work / "worker.log", options) as pid:
                time.sleep(2.0)  # the worker's own start-up settles
                idle_from, idle_cpu = time.monotonic(), tree_cpu(pid)
                time.sleep(2.0)
                idle_rate = (tree_cpu(pid) - idle_cpu) / (time.monotonic() - idle_from)
                queued: dict[str, float] = {}
                start, cpu0 = time.monotonic(), tree_cpu(pid)
                wall0 = time.time()
                for i, phone in enumerate(phones):
                    if rate:
                        time.sleep(max(0.0, start + i / rate - time.monotonic()))
                    state = CallState(
                        call_sid=f"CA{i:032x}", caller="+15550000000", step=STEP, seq=1
                    )
                    state.account = f"{40000000 + i}"
                    queued[phone] = time.time()
                    if possession.request_code(state, "sms_otp", MAX_WAIT) != "queued":
                        raise SystemExit(f"text {i} was not queued")
                delivered: dict[str, float] = {}
                deadline = time.monotonic() + 60 + texts / 2
                while len(delivered) < texts and time.monotonic() < deadline:
                    time.sleep(0.05)
                    delivered = {m.to: m.at for m in Outbox(outbox).since(wall0)}
                wall = time.monotonic() - start
                cpu = tree_cpu(pid) - cpu0 - idle_rate * wall
        finally:
            server.stop()
    latencies = [delivered[p] - queued[p] for p in delivered]
    print(f"worker: ivr worker {' '.join(options)}".rstrip())
    print(f"texts: {len(delivered)}/{texts} delivered in {wall:.1f} s", end="")
    print(f" (queued at {rate:g}/s)" if rate else " (all queued at once)")
    print(f"worker CPU per text: {cpu / max(1, len(delivered)) * 1000:.1f} ms", end="")
    print(f" (idle {idle_rate * 1000:.1f} ms/s subtracted)")
    if latencies:
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        print(f"send latency: p50 {p50:.2f} s, p99 {p99:.2f} s, max {max(latencies):.2f} s")
    if len(delivered) < texts:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--rate", type=float, default=0.0, help="texts queued per second")
    parser.add_argument("worker_options", nargs="*", help="passed on to `ivr worker`")
    args = parser.parse_args()
    run(args.texts, args.rate, args.worker_options)


if __name__ == "__main__":
    main()
