"""Running the service: `ivr serve` (production), `ivr worker`, `ivr dev` (a laptop)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ivr.cli import DATA_DIR, _reachable_redis, _redis_url, _settings, cli
from ivr.errors import FlowDefinitionError, IvrError, SettingsError
from ivr.processes import WEB_THREADS


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option(
    "--port",
    type=int,
    default=lambda: int(os.environ.get("PORT", "8000")),
    show_default="$PORT or 8000",
)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=WEB_THREADS,
    show_default=True,
    help="Threads per worker: one argon2 check blocks only its own.",
)
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the webhooks with gunicorn against REDIS_URL (production)."""
    settings = _settings()
    flow = _serve_checks(settings)  # fail here, one line a problem, not in every gunicorn worker
    for method, backend in _outbox_methods(flow, settings):
        click.echo(
            f"warning: {method} goes to the development outbox ({backend}=outbox): "
            f"codes are written to {settings.outbox}, never sent",
            err=True,
        )
    from ivr.processes import web_command

    argv = web_command(f"{host}:{port}", workers, threads=threads)
    os.execvp(argv[0], argv)


def _outbox_methods(flow: Any, settings: Any) -> list[tuple[str, str]]:
    from ivr.flows.schema import AuthenticateStep

    backends = {
        "sms_otp": ("IVR_SMS_BACKEND", settings.sms_backend),
        "email_otp": ("IVR_EMAIL_BACKEND", settings.email_backend),
        "callback": ("IVR_CALL_BACKEND", settings.call_backend),
    }
    methods = sorted({s.method for s in flow.steps.values() if isinstance(s, AuthenticateStep)})
    return [(m, backends[m][0]) for m in methods if m in backends and backends[m][1] == "outbox"]


@cli.command()
@click.option("--url", help="Redis URL (default: REDIS_URL, else the running `ivr dev`).")
@click.option("--name", help="Worker name (default: a random one).")
@click.option("--burst", is_flag=True, help="Work until the queue is empty, then exit.")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes: texts sent at once while each waits for the provider.",
)
def worker(url: str | None, name: str | None, burst: bool, processes: int) -> None:
    """Run rq workers on the `ivr` queue (one-time codes, callbacks); they ride out a Redis
    restart, and exit non-zero if Redis stays away."""
    from ivr import worker as rq_worker

    settings = _settings()  # a bad setting stops here, in one line, not in every job
    url = url or _redis_url()
    _reachable_redis(url, settings).close()  # nor does it start without Redis
    rq_worker.run(url, name=name, burst=burst, processes=processes)


@cli.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default=True)
@click.pass_context
def dev(ctx: click.Context, host: str, port: int, data_dir: Path) -> None:
    """Run Redis, the web server and a worker locally, with demo customers.

    One per data directory; Ctrl-C, SIGTERM or closing the terminal stops all of it.
    """
    ctx.obj = data_dir
    if ctx.invoked_subcommand is not None:
        return
    from ivr import devserver

    devserver.run(_settings(), data_dir, host, port, click.echo)


@dev.command("env")
@click.pass_obj
def dev_env(data_dir: Path) -> None:
    """Print the running stack's REDIS_URL, TWILIO_AUTH_TOKEN and IVR_API_TOKEN as `export`
    lines: eval "$(ivr dev env)"."""
    from ivr.dev.banner import env_lines
    from ivr.dev.state import DevState

    state = DevState.read(data_dir)
    if state is None:
        raise IvrError(f"no running `ivr dev` found in {data_dir}; start it first")
    for line in env_lines(state):
        click.echo(line)


def _serve_checks(settings: Any) -> Any:
    """Everything `ivr serve` needs before it listens, checked together: the settings it
    requires, the flow and what its methods need, the agent policy, and Redis answering (a
    service that listens without it answers every caller with the apology). Returns the flow.

    Raises:
        SettingsError: every problem found, one line each (a flow's own problems included).
        FlowDefinitionError: the flow is not valid, and nothing else is wrong.
    """
    from ivr.app import agent_policy_for, check_delivery_settings, load_checked_flow

    problems = []
    if not settings.redis_url:
        problems.append("REDIS_URL: not set; `ivr serve` needs a Redis (or use `ivr dev`)")
    if not settings.twilio_auth_token:
        problems.append("TWILIO_AUTH_TOKEN: not set; without it every webhook would be refused")
    if not (settings.public_url or settings.allowed_hosts):
        problems.append(
            "IVR_PUBLIC_URL: not set; set it to the https URL Twilio calls (or list this "
            "service's host names in IVR_ALLOWED_HOSTS), so that no other host's signature counts"
        )
    if settings.dev_phone:
        problems.append(
            "IVR_DEV_PHONE: set; the browser phone plays calls signed with the auth token for "
            "whoever opens it, so only `ivr dev` may turn it on: unset it"
        )
    try:
        agent_policy_for(settings)
    except SettingsError as exc:
        problems += exc.problems
    try:
        flow = load_checked_flow(settings)
    except FlowDefinitionError as exc:
        if not problems:
            raise
        raise SettingsError(*problems, *(f"flow is not valid: {p}" for p in exc.problems)) from None
    try:
        check_delivery_settings(flow, settings)
    except SettingsError as exc:
        problems += exc.problems
    if problems:
        raise SettingsError(*problems)
    _reachable_redis(settings.redis_url, settings)
    return flow
