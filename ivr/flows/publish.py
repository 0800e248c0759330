"""`ivr flows publish`, `versions`, `diff` and `rollback`: the one way a flow edit reaches the
web processes sharing a Redis, without a restart.

Publishing checks the flow (any error refuses) and plays its scenario tests (any failure
refuses), so a broken edit never becomes live; `ivr dev` publishes through the same function
each time the flow file changes. A flow is published under its file's name (`IVR_FLOW`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
from redis import Redis

from ivr.errors import IvrError
from ivr.flows.checks import check_flow, errors
from ivr.flows.diff import diff_flows
from ivr.flows.loader import load_flow, load_flow_with_marks
from ivr.flows.scenario_runner import run_tests
from ivr.flows.scenarios import load_scenarios
from ivr.flows.schema import Flow
from ivr.store.flows import SHORT, FlowVersions

Echo = Callable[..., None]


class PublishRefused(IvrError):
    """The flow failed its checks or its scenario tests; `lines` say why."""

    def __init__(self, message: str, lines: list[str]) -> None:
        super().__init__(message)
        self.lines = lines


def scenario_files_for(flow_path: Path) -> list[Path]:
    """The scenario files beside the flow (`tests/*.yaml`) whose `flow:` is this flow. One that
    cannot be read refuses the publish: it may well be this flow's."""
    tests = flow_path.parent / "tests"
    found = []
    for file in sorted([*tests.glob("*.yaml"), *tests.glob("*.yml")]):
        spec, _ = load_scenarios(file)
        if spec.flow == flow_path.stem:
            found.append(file)
    return found


def publish_flow(redis: Redis, flow_path: Path) -> tuple[str, bool, int]:
    """Check, test and make live the flow at `flow_path`: its hash, whether it is a new
    version, and how many scenario files passed. Raises PublishRefused (or
    FlowDefinitionError, for a file that does not parse) and leaves the live version alone."""
    flow, marks = load_flow_with_marks(flow_path)
    found = errors(check_flow(flow, marks, str(flow_path)))
    if found:
        raise PublishRefused(f"flow {flow_path.stem}: not published", [str(p) for p in found])
    files = scenario_files_for(flow_path)
    if files:
        out: list[str] = []
        code = run_tests(tuple(files), echo=lambda line="", err=False: out.append(line))
        if code:
            failures = [line for line in out if not line.startswith("PASS")]
            raise PublishRefused(f"flow {flow_path.stem}: scenario tests failed", failures)
    digest, new = FlowVersions(redis, flow_path.stem).publish(flow, time.time())
    return digest, new, len(files)


def _flow_path(flow: str) -> Path:
    path = Path(flow)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    from ivr.settings import load_settings

    return load_settings().flows_dir / f"{flow}.yaml"


def _name(name: str | None) -> str:
    if name is not None:
        return Path(name).stem if name.endswith((".yaml", ".yml")) else name
    from ivr.settings import load_settings

    return load_settings().flow


def _redis() -> Redis:
    from ivr.cli import _redis as connect

    client: Redis = connect()
    return client


@click.command("publish")
@click.argument("flow")
def flows_publish(flow: str) -> None:
    """Check and test FLOW (a file, or a name in IVR_FLOWS_DIR), then make it live."""
    path = _flow_path(flow)
    if not path.is_file():
        raise IvrError(f"{path}: no such flow file")
    try:
        digest, new, tested = publish_flow(_redis(), path)
    except PublishRefused as exc:
        for line in exc.lines:
            click.echo(line, err=True)
        raise click.ClickException(str(exc)) from None
    tests = f"{tested} scenario file(s) passed" if tested else "no scenario tests"
    state = "published" if new else "unchanged, live again"
    click.echo(f"flow {path.stem}: {state} {digest[:SHORT]} ({tests})")


@click.command("versions")
@click.argument("name", required=False)
def flows_versions(name: str | None) -> None:
    """The published versions of flow NAME (default IVR_FLOW), oldest first."""
    flow = _name(name)
    versions = FlowVersions(_redis(), flow).versions()
    if not versions:
        raise IvrError(f"flow {flow}: no version published; run `ivr flows publish {flow}`")
    for v in versions:
        at = datetime.fromtimestamp(v.published_at, UTC).isoformat(timespec="seconds")
        click.echo(f"{v.short}  {at}{'  live' if v.live else ''}")


def _version(ref: str, name: str | None) -> Flow:
    if Path(ref).is_file():
        return load_flow(ref)
    store = FlowVersions(_redis(), _name(name))
    flow = store.get(store.resolve(ref))
    assert flow is not None  # resolve found it among the published
    return flow


@click.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--flow", "name", help="The flow whose versions A and B are (default IVR_FLOW).")
def flows_diff(a: str, b: str, name: str | None) -> None:
    """What changed from A to B, step by step; each a flow file or a published version's hash."""
    old, new = _version(a, name), _version(b, name)
    for line in diff_flows(old, new).lines(old, new):
        click.echo(line)


@click.command("rollback")
@click.argument("name")
@click.argument("version", required=False)
def flows_rollback(name: str, version: str | None) -> None:
    """Make VERSION of flow NAME live again (default: the one published before the live one)."""
    store = FlowVersions(_redis(), _name(name))
    digest = store.rollback(version)
    click.echo(f"flow {store.name}: {digest[:SHORT]} is live")
