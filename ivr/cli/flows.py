"""`ivr flows check`: the safety proof of call flow files before they serve a call."""

from __future__ import annotations

from pathlib import Path

import click

from ivr.cli import cli
from ivr.errors import FlowDefinitionError, IvrError


@cli.group()
def flows() -> None:
    """Check, test, draw and describe call flow files."""


@flows.command("check")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def flows_check(paths: tuple[Path, ...]) -> None:
    """Prove every flow safe: no queue reachable without authentication, no personal prompts.

    The agent policy (agents.yaml) among them is checked as a policy."""
    from ivr.auth.agent_policy import AGENT_POLICY_FILE, load_agent_policy
    from ivr.errors import AgentPolicyError
    from ivr.flows.checks import check_flow
    from ivr.flows.loader import load_flow_with_marks

    files: list[Path] = []
    for path in paths or (Path("flows"),):
        files.extend(
            sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        )
    if not files:
        raise IvrError("no flow files (*.yaml) found")
    failed = 0
    for file in files:
        try:
            if file.name == AGENT_POLICY_FILE:
                load_agent_policy(file)
                problems = []
            else:
                flow, marks = load_flow_with_marks(file)
                problems = check_flow(flow, marks, str(file))
        except (FlowDefinitionError, AgentPolicyError) as exc:
            problems = exc.problems
        for problem in problems:
            click.echo(str(problem), err=problem.severity == "error")
        if any(p.severity == "error" for p in problems):
            failed += 1
        else:
            click.echo(f"ok  {file}")
    if failed:
        raise click.ClickException(f"{failed} of {len(files)} flow file(s) failed the checks")


def _register() -> None:
    """The other `flows` commands live beside what they drive (schema, graph, scenarios)."""
    from ivr.flows.graph import flows_graph
    from ivr.flows.json_schema import flows_schema
    from ivr.flows.scenario_runner import flows_test

    for command in (flows_schema, flows_graph, flows_test):
        flows.add_command(command)


_register()
