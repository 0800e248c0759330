"""`ivr flows test`: play scenario files through the call simulator, then report coverage and
how long each call takes a real caller.

In process (the default) every scenario gets a service of its own: the app on a fresh
fakeredis, the file's customers enrolled, and the worker's jobs run with rq's SimpleWorker
whenever the caller is put on hold, so a code lands in the outbox as it would. The engine's
trace hook records every step entered and every edge taken. With `--url` the same scenarios
play against a running service over HTTP; coverage then cannot be observed, and is not shown.

Caller time: ivr.flows.caller_time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ivr.errors import FlowDefinitionError, IvrError, Problem
from ivr.flows.loader import Marks, load_flow_with_marks
from ivr.flows.scenario_call import ScenarioCall, ScenarioFailed, ScenarioRun
from ivr.flows.scenario_coverage import Coverage, Edge
from ivr.flows.scenario_http import OverHttp
from ivr.flows.scenario_inprocess import InProcess
from ivr.flows.scenarios import Scenario, ScenarioFile, load_scenarios
from ivr.flows.schema import AuthenticateStep, Flow

# -- what one scenario did -------------------------------------------------------------------


@dataclass
class ScenarioResult:
    file: str
    line: int | None
    name: str
    flow: str
    failure: str | None = None
    transcript: list[str] = field(default_factory=list)
    to_authenticated: float | None = None
    to_queue: float | None = None
    steps: set[str] = field(default_factory=set)
    edges: set[Edge] = field(default_factory=set)

    @property
    def passed(self) -> bool:
        return self.failure is None


# -- running files ---------------------------------------------------------------------------


def flows_dir_of(path: Path) -> Path:
    """Scenario files live in `flows/tests/`, beside the flows they test."""
    parent = path.parent
    return parent.parent if parent.resolve().name == "tests" else parent


def run_file(path: Path, url: str | None = None) -> tuple[list[ScenarioResult], Flow, Marks, str]:
    """Play every scenario of one file; returns the results and the flow they tested."""
    spec, marks = load_scenarios(path)
    flow_path = flows_dir_of(path) / f"{spec.flow}.yaml"
    if not flow_path.is_file():
        line, col = marks.get(("flow",), (1, 1))
        raise FlowDefinitionError(
            [Problem(str(path), line, col, "flow", f"no flow file {flow_path}", "")]
        )
    flow, flow_marks = load_flow_with_marks(flow_path)
    results = []
    with tempfile.TemporaryDirectory(prefix="ivr-scenarios-") as work:
        target = _target(spec, url, flow_path.parent, Path(work))
        in_process = isinstance(target, InProcess)
        with _environment(target.worker_env() if in_process else {}), _quiet(in_process):
            for index, scenario in enumerate(spec.scenarios):
                results.append(_play(str(path), target, scenario, marks, index, flow))
    return results, flow, flow_marks, str(flow_path)


def _target(spec: ScenarioFile, url: str | None, flows_dir: Path, work: Path) -> Any:
    if url is None:
        return InProcess(flows_dir, spec.flow, spec.customers, work)
    from ivr.dev.state import DevState
    from ivr.settings import load_settings

    return OverHttp(url, load_settings(), DevState.read(Path(".ivr")), spec.customers)


def _play(
    file: str, target: Any, scenario: Scenario, marks: Marks, index: int, flow: Flow
) -> ScenarioResult:
    line, _ = marks.get(("scenarios", index), (None, None))
    result = ScenarioResult(file, line, scenario.name, flow.name)
    call = ScenarioCall(ScenarioRun(file, target), scenario, marks, index)
    try:
        target.start(call)
        call.play()
    except ScenarioFailed as exc:
        result.failure = str(exc)
    result.transcript = call.log
    result.to_queue = call.to_queue
    result.to_authenticated = call.to_authenticated
    for source, field_name, step, at in call.trace:
        result.steps.add(step)
        if source is not None and field_name is not None:
            result.edges.add((source, field_name, step))
        proof = isinstance(flow.steps.get(source or ""), AuthenticateStep)
        if proof and field_name == "next" and result.to_authenticated is None:
            result.to_authenticated = at
    return result


@contextlib.contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    """The in-process service's own log (audit lines, alerts) is not the test's output."""
    if quiet:
        logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        if quiet:
            logging.disable(logging.NOTSET)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def scenario_files(paths: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for path in paths or (Path("flows/tests"),):
        if path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            files.append(path)
    return files


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def run_tests(
    paths: tuple[Path, ...],
    url: str | None = None,
    min_coverage: float | None = None,
    coverage_out: Path | None = None,
    echo: Any = click.echo,
) -> int:
    """Play, print, and return the exit code: 1 when a scenario failed or edge coverage of a
    flow is below `min_coverage` percent."""
    files = scenario_files(paths)
    if not files:
        raise IvrError("no scenario files (*.yaml) found; they live in flows/tests/")
    coverages: dict[str, Coverage] = {}
    failed = passed = 0
    for file in files:
        try:
            results, flow, marks, flow_file = run_file(file, url)
        except FlowDefinitionError as exc:
            for problem in exc.problems:
                echo(str(problem), err=True)
            failed += 1
            continue
        cov = coverages.setdefault(flow_file, Coverage(flow, marks, flow_file))
        for result in results:
            passed += result.passed
            cov.steps |= result.steps
            cov.edges |= result.edges
            times = (
                f"authenticated {_seconds(result.to_authenticated)}, "
                f"queue {_seconds(result.to_queue)}"
            )
            echo(f"{'PASS' if result.passed else 'FAIL'}  {file}:{result.line}  "
                 f"{result.name}  ({times})")  # fmt: skip
            if not result.passed:
                failed += 1
                echo(f"      {result.failure}")
                echo("      transcript:")
                for line in result.transcript:
                    echo(f"        {line}")
    echo(f"{passed} scenario(s) passed, {failed} failed")
    code = 1 if failed else 0
    if url is not None:
        echo("(coverage is measured in process only: run without --url to see it)")
        return code
    for cov in coverages.values():
        for line in cov.lines():
            echo(line)
        if min_coverage is not None and cov.edge_percent < min_coverage:
            echo(
                f"edge coverage of flow {cov.flow.name} is {cov.edge_percent:.1f}%, "
                f"below --min-coverage {min_coverage:g}%",
                err=True,
            )
            code = 1
    if coverage_out is not None:
        if len(coverages) != 1:
            raise IvrError("--coverage-out writes one flow's coverage: test one flow at a time")
        [cov] = coverages.values()
        coverage_out.write_text(json.dumps(cov.to_json(), indent=2) + "\n")
    return code


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--url",
    help="Play against a running dev or staging service at this base URL, over HTTP. Needs "
    "its Redis (REDIS_URL): before each scenario the test customers' and calling numbers' "
    "failure counts, abuse windows and send caps are deleted there. Never point it at "
    "production.",
)
@click.option(
    "--min-coverage",
    type=click.FloatRange(0, 100),
    help="Fail when a flow's edge coverage is below this percent.",
)
@click.option(
    "--coverage-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the steps and edges visited as JSON (for `ivr flows graph`).",
)
def flows_test(
    paths: tuple[Path, ...], url: str | None, min_coverage: float | None, coverage_out: Path | None
) -> None:
    """Play the scenario tests (default: flows/tests/) and report coverage and caller time."""
    if url is not None and min_coverage is not None:
        raise click.UsageError("--min-coverage needs the in-process run (no --url)")
    try:
        code = run_tests(paths, url, min_coverage, coverage_out)
    except IvrError as exc:
        raise click.ClickException(str(exc)) from None
    if code:
        raise SystemExit(code)
