"""`ivr flows check` as `ivr.flows.report.flows_check`: the same lines and exit codes as the
command it replaces, and `--format json|github` for CI annotations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ivr.cli import cli
from ivr.flows.loader import MAX_FLOW_BYTES
from ivr.flows.report import flows_check

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "flows"
DEFAULT = (SHIPPED / "default.yaml").read_text()
PROBLEM_KEYS = ["file", "line", "column", "path", "message", "hint", "severity"]


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(flows_check, [str(a) for a in args])


def line_of(text: str, needle: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} occurs {len(hits)} times"
    return hits[0]


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    """A copy of the shipped flows with one broken flow and one that only warns beside them."""
    folder = tmp_path / "flows"
    shutil.copytree(SHIPPED, folder)
    (folder / "broken.yaml").write_text(DEFAULT.replace("queue: general", "queue: genral"))
    (folder / "terse.yaml").write_text(
        DEFAULT.replace("Please say your passcode.", "Your passcode, please.")
    )
    return folder


class TestText:
    @pytest.mark.parametrize(
        "case", ["shipped", "folder", "one file", "policy", "bad yaml", "no files"]
    )
    def test_the_same_lines_and_exit_code_through_ivr_as_alone(
        self, flows: Path, tmp_path: Path, case: str
    ) -> None:
        (tmp_path / "empty").mkdir()
        (tmp_path / "bad.yaml").write_text("name: x\nsteps: [a, b\n")
        args = {
            "shipped": [SHIPPED],
            "folder": [flows],
            "one file": [flows / "broken.yaml"],
            "policy": [flows / "agents.yaml"],
            "bad yaml": [tmp_path / "bad.yaml"],
            "no files": [tmp_path / "empty"],
        }[case]
        ours = run(*args)
        theirs = CliRunner().invoke(cli, ["flows", "check", *map(str, args)])
        assert (ours.exit_code, ours.stdout, ours.stderr) == (
            theirs.exit_code,
            theirs.stdout,
            theirs.stderr,
        )

    def test_errors_on_stderr_warnings_and_ok_on_stdout(self, flows: Path) -> None:
        result = run(flows)
        assert result.exit_code == 1
        broken, terse = flows / "broken.yaml", flows / "terse.yaml"
        assert result.stderr.splitlines() == [
            f"{broken}:{line_of(DEFAULT, 'queue: general')}:5: steps.agent_queue.queue: "
            "no queue `genral` under `queues:` (did you mean `general`?)",
            "Error: 1 of 4 flow file(s) failed the checks",
        ]
        assert result.stdout.splitlines() == [
            f"ok  {flows / 'agents.yaml'}",
            f"ok  {flows / 'default.yaml'}",
            f"{terse}:{line_of(DEFAULT, 'Please say your passcode')}:5: warning: "
            "steps.passcode.prompt: a passcode is spoken, but the prompt does not say to say "
            'it (write e.g. "Please say your passcode.")',
            f"ok  {terse}",
        ]


class TestJson:
    def test_one_document_with_every_file_and_problem(self, flows: Path) -> None:
        result = run("--format", "json", flows)
        assert result.exit_code == 1
        assert result.stderr == "Error: 1 of 4 flow file(s) failed the checks\n"
        document = json.loads(result.stdout)  # stdout is the document and nothing else
        assert list(document) == ["version", "ok", "summary", "files"]
        assert document["version"] == 1
        assert document["ok"] is False
        assert document["summary"] == {"files": 4, "failed": 1, "errors": 1, "warnings": 1}
        assert [(f["file"], f["kind"], f["ok"]) for f in document["files"]] == [
            (str(flows / "agents.yaml"), "agent_policy", True),
            (str(flows / "broken.yaml"), "flow", False),
            (str(flows / "default.yaml"), "flow", True),
            (str(flows / "terse.yaml"), "flow", True),
        ]
        (error,) = document["files"][1]["problems"]
        assert list(error) == PROBLEM_KEYS
        assert error == {
            "file": str(flows / "broken.yaml"),
            "line": line_of(DEFAULT, "queue: general"),
            "column": 5,
            "path": "steps.agent_queue.queue",
            "message": "no queue `genral` under `queues:`",
            "hint": "did you mean `general`?",
            "severity": "error",
        }
        (warning,) = document["files"][3]["problems"]
        assert warning["severity"] == "warning"
        assert warning["path"] == "steps.passcode.prompt"

    def test_the_shipped_flows_pass_with_no_problems(self) -> None:
        result = run("--format", "json", SHIPPED)
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert document["ok"] is True
        assert all(f["problems"] == [] for f in document["files"])

    def test_a_problem_with_no_line_has_null(self, tmp_path: Path) -> None:
        path = tmp_path / "huge.yaml"
        path.write_text("name: x\n" + "#" * MAX_FLOW_BYTES)
        result = run("--format", "json", path)
        assert result.exit_code == 1
        (problem,) = json.loads(result.stdout)["files"][0]["problems"]
        assert (problem["line"], problem["column"]) == (None, None)
        assert "larger than" in problem["message"]


class TestGithub:
    def test_each_problem_is_an_annotation_at_its_line(self, flows: Path) -> None:
        result = run("--format", "github", flows)
        assert result.exit_code == 1
        broken, terse = flows / "broken.yaml", flows / "terse.yaml"
        lines = result.stdout.splitlines()
        error = next(line for line in lines if line.startswith("::error "))
        assert error == (
            f"::error file={broken},line={line_of(DEFAULT, 'queue: general')},col=5,"
            "title=ivr flows check%3A steps.agent_queue.queue::"
            "no queue `genral` under `queues:` (did you mean `general`?)"
        )
        warning = next(line for line in lines if line.startswith("::warning "))
        assert warning.startswith(
            f"::warning file={terse},line={line_of(DEFAULT, 'Please say your passcode')},col=5,"
        )
        assert f"ok  {terse}" in lines

    def test_commas_colons_and_newlines_cannot_break_the_command(self, tmp_path: Path) -> None:
        path = tmp_path / "a,b:c.yaml"
        path.write_text("name: x\nsteps: [a, b\n")
        result = run("--format", "github", path)
        (line,) = result.stdout.splitlines()
        assert line.startswith(f"::error file={str(path).replace(':', '%3A').replace(',', '%2C')}")
        assert line.count("::") == 2
