"""`ivr agents add/list/remove/rotate` as an admin uses them, against a real Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from ivr.cli import cli
from ivr.store.agents import AgentDirectory
from tests.support import redis_contents

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner(redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no stray .env or .ivr/ from the developer's checkout
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("IVR_FLOWS_DIR", str(ROOT / "flows"))
    monkeypatch.delenv("IVR_AGENT_POLICY", raising=False)
    return CliRunner()


def add(runner: CliRunner, name: str, role: str) -> str:
    result = runner.invoke(cli, ["agents", "add", name, "--role", role])
    assert result.exit_code == 0, result.output
    assert result.stderr == f"added agent {name} ({role}); the token is shown only this once:\n"
    return result.stdout.strip()


class TestAgentsCli:
    def test_add_prints_a_working_token_once_and_stores_its_digest(
        self, runner: CliRunner, rdb: redis.Redis
    ) -> None:
        token = add(runner, "ada", "specialist")
        agent = AgentDirectory(rdb).authenticate(token)
        assert agent is not None and (agent.name, agent.role) == ("ada", "specialist")
        assert token.encode() not in redis_contents(rdb)

    def test_list_shows_names_and_roles_never_tokens(self, runner: CliRunner) -> None:
        tokens = [add(runner, "bob", "agent"), add(runner, "ada", "supervisor")]
        result = runner.invoke(cli, ["agents", "list"])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert [line.split()[:2] for line in lines] == [["ada", "supervisor"], ["bob", "agent"]]
        assert all(line.split()[2].endswith("Z") for line in lines)
        assert not any(token in result.output for token in tokens)

    def test_rotate_revokes_the_old_token_at_once(
        self, runner: CliRunner, rdb: redis.Redis
    ) -> None:
        old = add(runner, "ada", "agent")
        result = runner.invoke(cli, ["agents", "rotate", "ada"])
        assert result.exit_code == 0, result.output
        new = result.stdout.strip()
        directory = AgentDirectory(rdb)
        assert directory.authenticate(old) is None
        assert directory.authenticate(new) is not None

    def test_remove_revokes(self, runner: CliRunner, rdb: redis.Redis) -> None:
        token = add(runner, "ada", "agent")
        result = runner.invoke(cli, ["agents", "remove", "ada"])
        assert (result.exit_code, result.output) == (0, "removed agent ada\n")
        assert AgentDirectory(rdb).authenticate(token) is None

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (
                ["add", "ada", "--role", "janitor"],
                "Error: role 'janitor' is not in the agent policy "
                "(roles: agent, specialist, supervisor)",
            ),
            (["add", "Ada Lovelace", "--role", "agent"], "Error: agent name 'Ada Lovelace': "),
            (["rotate", "ghost"], "Error: no agent named ghost"),
            (["remove", "ghost"], "Error: no agent named ghost"),
        ],
    )
    def test_mistakes_are_one_line(self, runner: CliRunner, args: list[str], message: str) -> None:
        result = runner.invoke(cli, ["agents", *args])
        assert result.exit_code == 1
        assert result.output.startswith(message)
        assert len(result.output.strip().splitlines()) == 1

    def test_adding_twice_says_rotate(self, runner: CliRunner) -> None:
        add(runner, "ada", "agent")
        result = runner.invoke(cli, ["agents", "add", "ada", "--role", "agent"])
        assert result.exit_code == 1
        assert result.output == "Error: agent ada already exists; use `ivr agents rotate ada`\n"

    def test_without_a_policy_no_agent_is_added(
        self, runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("IVR_FLOWS_DIR", str(tmp_path))
        result = runner.invoke(cli, ["agents", "add", "ada", "--role", "agent"])
        assert result.exit_code == 1
        assert result.output.startswith("Error: IVR_AGENT_POLICY: no agent policy at ")

    def test_a_bad_policy_is_located(
        self, runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        policy = tmp_path / "policy.yaml"
        policy.write_text("roles:\n  agent:\n    one_factor: [pin]\n")
        monkeypatch.setenv("IVR_AGENT_POLICY", str(policy))
        result = runner.invoke(cli, ["agents", "add", "ada", "--role", "agent"])
        assert result.exit_code == 1
        assert result.output.startswith(f"Error: {policy}:3:18: roles.agent.one_factor[0]: ")

    def test_flows_check_checks_the_policy_beside_the_flows(self, runner: CliRunner) -> None:
        result = runner.invoke(cli, ["flows", "check", str(ROOT / "flows")])
        assert result.exit_code == 0, result.output
        assert f"ok  {ROOT / 'flows' / 'agents.yaml'}" in result.output
