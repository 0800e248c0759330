"""`ivr agents`: the agents allowed to read calls through the agent API, by token."""

from __future__ import annotations

import time

import click

from ivr.cli import _redis, _settings, cli
from ivr.errors import IvrError


@cli.group()
def agents() -> None:
    """Manage agent tokens for the agent API (GET /api/calls/<ref>) in REDIS_URL."""


def _policy_roles() -> list[str]:
    from ivr.app import agent_policy_for, agent_policy_path

    settings = _settings()
    policy = agent_policy_for(settings)
    if policy is None:
        raise IvrError(
            f"IVR_AGENT_POLICY: no agent policy at {agent_policy_path(settings)}; "
            "create it (see flows/agents.yaml) or point IVR_AGENT_POLICY at it"
        )
    return sorted(policy.roles)


def _show_token(token: str, what: str) -> None:
    click.echo(f"{what}; the token is shown only this once:", err=True)
    click.echo(token)


@agents.command("add")
@click.argument("name")
@click.option("--role", required=True, help="A role the agent policy names (e.g. agent).")
def agents_add(name: str, role: str) -> None:
    """Add an agent and print its token, once (the token alone goes to stdout)."""
    from ivr.store.agents import AgentDirectory

    roles = _policy_roles()
    if role not in roles:
        raise IvrError(f"role {role!r} is not in the agent policy (roles: {', '.join(roles)})")
    token = AgentDirectory(_redis()).add(name, role)
    _show_token(token, f"added agent {name} ({role})")


@agents.command("list")
def agents_list() -> None:
    """List agents: name, role, when added. Never a token."""
    from ivr.store.agents import AgentDirectory

    listed = AgentDirectory(_redis()).all()
    if not listed:
        click.echo("(no agents; add one with `ivr agents add NAME --role ROLE`)")
    for agent in listed:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(agent.created))
        click.echo(f"{agent.name:24} {agent.role:16} {created}")


@agents.command("remove")
@click.argument("name")
def agents_remove(name: str) -> None:
    """Remove an agent; its token stops working at once."""
    from ivr.store.agents import AgentDirectory

    AgentDirectory(_redis()).remove(name)
    click.echo(f"removed agent {name}")


@agents.command("rotate")
@click.argument("name")
def agents_rotate(name: str) -> None:
    """Give an agent a new token; the old one stops working at once."""
    from ivr.store.agents import AgentDirectory

    token = AgentDirectory(_redis()).rotate(name)
    _show_token(token, f"new token for agent {name}, the old one is revoked")
