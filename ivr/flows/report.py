"""`ivr flows check`: every flow file's problems, for a person (text) or for CI (json, github).

The checks live in `ivr.flows.loader` and `ivr.flows.checks`; this module only finds the
files, runs them, and writes what they found. The JSON document (described in the README,
"Call flows") is one object whose keys do not change between releases, so a CI step can turn
each problem into an annotation at its file and line; `--format github` writes GitHub's own
`::error file=...,line=...::` workflow commands directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from ivr.errors import AgentPolicyError, FlowDefinitionError, Problem

FORMATS = ("text", "json", "github")
JSON_VERSION = 1


@dataclass(frozen=True)
class FileResult:
    """What checking one file found; a file with any error must not be served."""

    file: str
    kind: Literal["flow", "agent_policy"]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def flow_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, and the *.yaml / *.yml files of each directory named."""
    files: list[Path] = []
    for path in paths:
        files.extend(
            sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        )
    return files


def check_file(file: Path) -> FileResult:
    """A flow file is loaded and proved; the agent policy beside the flows is loaded as one."""
    from ivr.auth.agent_policy import AGENT_POLICY_FILE, load_agent_policy
    from ivr.flows.checks import check_flow
    from ivr.flows.loader import load_flow_with_marks

    policy = file.name == AGENT_POLICY_FILE
    try:
        if policy:
            load_agent_policy(file)
            problems: list[Problem] = []
        else:
            flow, marks = load_flow_with_marks(file)
            problems = check_flow(flow, marks, str(file))
    except (FlowDefinitionError, AgentPolicyError) as exc:
        problems = exc.problems
    return FileResult(str(file), "agent_policy" if policy else "flow", problems)


def as_json(results: list[FileResult]) -> str:
    errors = sum(p.severity == "error" for r in results for p in r.problems)
    document = {
        "version": JSON_VERSION,
        "ok": all(r.ok for r in results),
        "summary": {
            "files": len(results),
            "failed": sum(not r.ok for r in results),
            "errors": errors,
            "warnings": sum(len(r.problems) for r in results) - errors,
        },
        "files": [
            {
                "file": r.file,
                "kind": r.kind,
                "ok": r.ok,
                "problems": [_problem(p) for p in r.problems],
            }
            for r in results
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def _problem(problem: Problem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "column": problem.column,
        "path": problem.path,
        "message": problem.message,
        "hint": problem.hint,
        "severity": problem.severity,
    }


def as_github(problem: Problem) -> str:
    """One GitHub Actions workflow command: an annotation on the file's line in the PR."""
    level = "error" if problem.severity == "error" else "warning"
    props = {"file": problem.file, "line": problem.line, "col": problem.column}
    props["title"] = f"ivr flows check: {problem.path}" if problem.path else "ivr flows check"
    text = problem.message + (f" ({problem.hint})" if problem.hint else "")
    where = ",".join(f"{k}={_escape(str(v), True)}" for k, v in props.items() if v is not None)
    return f"::{level} {where}::{_escape(text, False)}"


def _escape(value: str, prop: bool) -> str:
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return value.replace(":", "%3A").replace(",", "%2C") if prop else value


@click.command("check")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text for people; json (one document) or github (annotations) for CI.",
)
def flows_check(paths: tuple[Path, ...], fmt: str) -> None:
    """Prove every flow safe: no queue reachable without authentication, no personal prompts,
    every prompt and TwiML document fit for the caller and for Twilio.

    The agent policy (agents.yaml) among them is checked as a policy."""
    files = flow_files(paths or (Path("flows"),))
    if not files:
        raise click.ClickException("no flow files (*.yaml) found")
    results = []
    for file in files:
        result = check_file(file)
        results.append(result)
        if fmt == "json":
            continue
        for problem in result.problems:
            if fmt == "github":
                click.echo(as_github(problem))
            else:
                click.echo(str(problem), err=problem.severity == "error")
        if result.ok:
            click.echo(f"ok  {file}")
    if fmt == "json":
        click.echo(as_json(results))
    failed = sum(not r.ok for r in results)
    if failed:
        raise click.ClickException(f"{failed} of {len(files)} flow file(s) failed the checks")
