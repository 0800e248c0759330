"""The agent side on a laptop: `ivr dev`'s demo agents and `ivr call --hold`, which leaves the
caller waiting in the queue so the agent page can show the call, against a real Redis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from ivr.cli import cli
from ivr.dev.customers import DEMO_AGENTS, DEMO_CUSTOMERS, customer_record, seed_demo_agents
from ivr.runtime import make_hasher
from ivr.settings import load_settings
from ivr.store.agents import AgentDirectory
from ivr.store.customers import RedisCustomerDirectory
from ivr.store.sessions import SessionStore

ROOT = Path(__file__).resolve().parents[2]
ADA = DEMO_CUSTOMERS[0]


@pytest.fixture
def runner(redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no stray .env or .ivr/ from the developer's checkout
    for name, value in {
        "REDIS_URL": redis_url,
        "IVR_FLOWS_DIR": str(ROOT / "flows"),
        "TWILIO_AUTH_TOKEN": "dev-agent-side-token",
        "IVR_CODE_KEY": "dev-agent-side-code-key-0123",
        "IVR_ARGON2_MEMORY_KIB": "1024",
        "IVR_ARGON2_TIME_COST": "1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IVR_AGENT_POLICY", raising=False)
    return CliRunner()


def test_each_start_gives_every_demo_agent_a_new_working_token(rdb: redis.Redis) -> None:
    first = seed_demo_agents(rdb)
    again = seed_demo_agents(rdb)
    directory = AgentDirectory(rdb)
    assert set(first) == set(again) == set(DEMO_AGENTS)
    for role, name in DEMO_AGENTS.items():
        assert first[role] != again[role]
        assert directory.authenticate(first[role]) is None  # the old token no longer works
        agent = directory.authenticate(again[role])
        assert agent is not None and (agent.name, agent.role) == (name, role)


def test_a_held_call_stays_readable_until_the_caller_hangs_up(
    runner: CliRunner, rdb: redis.Redis
) -> None:
    RedisCustomerDirectory(rdb).add(customer_record(ADA, make_hasher(load_settings())))
    tokens = seed_demo_agents(rdb)
    inputs = ["-i", f"{ADA.account}#", "-i", "1", "-i", f"{ADA.pin}#", "-i", "1"]
    result = runner.invoke(cli, ["call", "--in-process", "--hold", *inputs], input="\n")
    assert result.exit_code == 0, result.output
    assert "-> enqueued in queue 'balances'" in result.output
    found = re.search(
        r"the agent page: http://localhost/agent#ref=([A-Za-z0-9_-]+)\)", result.output
    )
    assert found, result.output
    ref = found.group(1)
    assert "press Enter to hang up" in result.output
    # Enter hung up: Twilio's status callback marked the call over, so no agent reads it.
    assert SessionStore(rdb, 3600).by_ref(ref) is None
    assert AgentDirectory(rdb).authenticate(tokens["agent"]) is not None
