"""The benchmark's command: check the request, start the services, seed, play, report."""

from __future__ import annotations

import secrets
import signal
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from types import FrameType

import click
from redis.exceptions import RedisError

from bench import kinds
from bench.calls import play_calls
from bench.plans import FLOW_NAME, CallPlan, calls_within, check_flow, plan_calls, seed_customers
from bench.report import header, report
from bench.stack import FLOWS_DIR, services
from bench.texts import Texts
from ivr.errors import IvrError, SettingsError
from ivr.flows.loader import load_flow
from ivr.runtime import connect_redis, make_hasher
from ivr.settings import Settings, environment_settings
from ivr.store.server import tail

EXIT_FAILED_TO_RUN = 2
EXIT_INTERRUPTED = 130


@click.command()
@click.option(
    "--calls", type=click.IntRange(min=1), default=200, show_default=True, help="whole calls"
)
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=4, show_default=True, help="threads"
)
@click.option(
    "--web-workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="gunicorn workers, as the Procfile",
)
@click.option(
    "--max-seconds",
    type=click.IntRange(min=1),
    default=900,
    show_default=True,
    help="start no call after this long",
)
def main(calls: int, concurrency: int, web_workers: int, max_seconds: int) -> None:
    """Webhook latency benchmark (SECURITY.md item 4): whole signed calls against real
    gunicorn, a real rq worker and a real Redis; see bench/README.md."""
    try:
        settings = environment_settings()
    except SettingsError as exc:
        sys.exit(failed(str(exc)))
    plans = plan_calls(calls)
    # Every text goes to a +1 number: a capped send must never be what the numbers measure.
    allowed = calls_within(plans, settings.send_limit_prefix)
    if allowed < calls:
        raise click.UsageError(
            f"--calls {calls} would send more texts to one country prefix than "
            f"IVR_SEND_LIMIT_PREFIX={settings.send_limit_prefix} allows; use --calls {allowed} "
            f"or fewer"
        )
    sys.exit(run(plans, concurrency, web_workers, max_seconds, settings))


def run(
    plans: list[CallPlan], concurrency: int, web_workers: int, max_seconds: int, settings: Settings
) -> int:
    """0: every call ended as scripted and every kind's p99 is under budget; 1: not; 2: the
    benchmark could not run; 130: interrupted. Everything it started is stopped either way."""
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        flow = load_flow(FLOWS_DIR / f"{FLOW_NAME}.yaml")
        check_flow(flow)
        auth_token = secrets.token_hex(16)
        with (
            tempfile.TemporaryDirectory(prefix="ivr-bench-") as tmp,
            services(Path(tmp), web_workers, auth_token) as stack,
            closing(connect_redis(stack.redis_url)) as redis,
        ):
            seed_customers(redis, make_hasher(settings), plans)
            redis_version = str(redis.info("server").get("redis_version", "?"))
            for line in header(plans, concurrency, web_workers, settings, redis_version):
                print(line)
            print(f"serving     {stack.base_url} (gunicorn master pid {stack.web.pid})")
            print(
                f"worker      {stack.worker_name} (pid {stack.worker.pid}); codes to {stack.outbox}"
            )
            print(flush=True)
            result = play_calls(
                plans, concurrency, stack.base_url, auth_token, Texts(stack.outbox), max_seconds
            )
            lines, within = report(result, concurrency, kinds.step_kinds(flow))
            print("\n".join(lines))
            if result.failures:
                print(f"\ngunicorn log tail:\n{tail(stack.web.log_path, 20)}")
                print(f"\nworker log tail:\n{tail(stack.worker.log_path, 20)}")
            return 0 if within and not result.failures and not result.skipped else 1
    except KeyboardInterrupt:
        print("interrupted; everything it started is stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RuntimeError, OSError, IvrError, RedisError) as exc:
        return failed(str(exc))
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def failed(reason: str) -> int:
    print(f"benchmark failed: {reason}", file=sys.stderr)
    return EXIT_FAILED_TO_RUN


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
