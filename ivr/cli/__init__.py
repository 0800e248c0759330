"""The `ivr` command: serve, worker, dev, call, flows, customers, agents, audit.

Every expected failure (a bad setting, a bad flow, a weak PIN, Redis unreachable) ends with one
clear line and a non-zero exit, never a traceback. This module holds the group, that error
handling and what every command shares; each command module registers itself on `cli`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click
import redis.exceptions

from ivr.errors import FlowDefinitionError, IvrError, SettingsError

DATA_DIR = Path(".ivr")


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FlowDefinitionError as exc:
            raise click.ClickException(f"flow is not valid:\n{exc}") from None
        except SettingsError as exc:
            # One "Error: VARIABLE: ..." line for each problem, all of them at once.
            raise click.ClickException("\nError: ".join(exc.problems)) from None
        except IvrError as exc:
            raise click.ClickException(str(exc)) from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise click.ClickException(f"cannot reach Redis ({exc}); check REDIS_URL") from None


@click.group(cls=_Group)
@click.version_option(package_name="secure-ivr")
def cli() -> None:
    """secure-ivr: callers prove who they are before any agent picks up."""
    _log_lines()


def _log_lines() -> None:
    """JSON log lines for every command (the worker's included) when IVR_LOG_FORMAT=json; a bad
    setting is the command's to report."""
    from ivr.errors import SettingsError
    from ivr.logging_setup import configure

    with contextlib.suppress(SettingsError):
        configure(_settings().log_format)


def _settings(**overrides: Any) -> Any:
    from ivr.settings import load_settings

    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _redis_url() -> str:
    url = _settings().redis_url
    if not url:
        state = _dev_state()
        url = state.redis_url if state else None
    if not url:
        raise IvrError("REDIS_URL: not set; export it, or start `ivr dev` first")
    return url


def _redis() -> Any:
    return _reachable_redis(_redis_url())


def _dev_state() -> Any:
    from ivr.dev.state import DevState

    return DevState.read(DATA_DIR)


def _reachable_redis(url: str, settings: Any = None) -> Any:
    """A client on `url` that has answered PING, or one line naming REDIS_URL (its password
    masked) and why: a process that cannot reach Redis must not start, nor a command run."""
    from ivr.runtime import connect_redis
    from ivr.settings import masked_redis_url

    shown = masked_redis_url(url)
    try:
        client = connect_redis(url, settings or _settings())
        client.ping()
    except ValueError as exc:  # a --url that never went through the settings
        raise IvrError(f"REDIS_URL: {exc} (got {shown!r})") from None
    except redis.exceptions.RedisError as exc:
        raise IvrError(f"REDIS_URL: cannot reach Redis at {shown} ({exc})") from None
    return client


def main() -> None:
    cli(prog_name="ivr")


# Imported last: each registers its commands on `cli`, defined above.
from ivr.cli import agents, audit, call, customers, flows, service  # noqa: E402, F401
