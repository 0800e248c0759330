"""`ivr flows`: check, test, draw and describe call flow files; each command lives beside
what it drives (ivr.flows.report, .scenario_runner, .graph, .json_schema)."""

from __future__ import annotations

from ivr.cli import cli


@cli.group()
def flows() -> None:
    """Check, test, draw and describe call flow files."""


def _register() -> None:
    from ivr.flows.graph import flows_graph
    from ivr.flows.json_schema import flows_schema
    from ivr.flows.publish import flows_diff, flows_publish, flows_rollback, flows_versions
    from ivr.flows.report import flows_check
    from ivr.flows.scenario_runner import flows_test

    for command in (flows_check, flows_schema, flows_graph, flows_test):
        flows.add_command(command)
    for command in (flows_publish, flows_versions, flows_diff, flows_rollback):
        flows.add_command(command)


_register()
