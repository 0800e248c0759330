"""Running the service: `ivr serve` (production), `ivr worker`, `ivr dev` (a laptop)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ivr.cli import DATA_DIR, _redis_url, _settings, cli
from ivr.errors import IvrError


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option(
    "--port",
    type=int,
    default=lambda: int(os.environ.get("PORT", "8000")),
    show_default="$PORT or 8000",
)
@click.option("--workers", type=int, default=2, show_default=True)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the webhooks with gunicorn against REDIS_URL (production)."""
    settings = _settings()
    if not settings.redis_url:
        raise IvrError("REDIS_URL: not set; `ivr serve` needs a Redis (or use `ivr dev`)")
    if not settings.twilio_auth_token:
        raise IvrError("TWILIO_AUTH_TOKEN: not set; without it every webhook would be refused")
    from ivr.app import agent_policy_for, check_delivery_settings, load_checked_flow

    flow = load_checked_flow(settings)  # fail here, in one line, not in every gunicorn worker
    check_delivery_settings(flow, settings)
    agent_policy_for(settings)
    if not (settings.public_url or settings.allowed_hosts):
        raise IvrError(
            "IVR_PUBLIC_URL: not set; set it to the https URL Twilio calls (or list this "
            "service's host names in IVR_ALLOWED_HOSTS), so that no other host's signature counts"
        )
    for method, backend in _outbox_methods(flow, settings):
        click.echo(
            f"warning: {method} goes to the development outbox ({backend}=outbox): "
            f"codes are written to {settings.outbox}, never sent",
            err=True,
        )
    from ivr.processes import web_command

    argv = web_command(f"{host}:{port}", workers)
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

    _settings()  # a bad setting stops here, in one line, not in every job
    rq_worker.run(url or _redis_url(), name=name, burst=burst, processes=processes)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default=True)
def dev(host: str, port: int, data_dir: Path) -> None:
    """Run Redis, the web server and a worker locally, with demo customers."""
    from ivr import devserver

    devserver.run(_settings(), data_dir, host, port, click.echo)
