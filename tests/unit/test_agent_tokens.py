"""Agent tokens: one per agent, with a role, kept only as a digest; rotate and remove revoke."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from ivr.errors import AgentError
from ivr.store.agents import AgentDirectory
from tests.support import redis_contents


@pytest.fixture
def agents(redis: Any) -> AgentDirectory:
    return AgentDirectory(redis)


class TestTokens:
    def test_a_token_names_its_agent_and_role(self, agents: AgentDirectory) -> None:
        token = agents.add("ada", "specialist")
        agent = agents.authenticate(token)
        assert agent is not None
        assert (agent.name, agent.role) == ("ada", "specialist")
        assert len(token) == 43  # secrets.token_urlsafe(32)

    def test_the_token_rests_nowhere_only_its_digest(
        self, agents: AgentDirectory, redis: Any
    ) -> None:
        token = agents.add("ada", "agent")
        stored = redis_contents(redis)
        assert token.encode() not in stored
        assert hashlib.sha256(token.encode()).hexdigest().encode() in stored

    def test_each_agent_gets_a_different_token(self, agents: AgentDirectory) -> None:
        assert agents.add("ada", "agent") != agents.add("bob", "agent")

    @pytest.mark.parametrize(
        "given", ["", "x", "not a token", "A" * 43, "A" * 500, "\u202e" * 43, "a.b.c" * 10]
    )
    def test_anything_else_is_nobody(self, agents: AgentDirectory, given: str) -> None:
        agents.add("ada", "agent")
        assert agents.authenticate(given) is None

    def test_rotate_revokes_the_old_token_at_once(self, agents: AgentDirectory) -> None:
        old = agents.add("ada", "agent")
        new = agents.rotate("ada")
        assert agents.authenticate(old) is None
        agent = agents.authenticate(new)
        assert agent is not None and agent.role == "agent"

    def test_remove_revokes_and_forgets(self, agents: AgentDirectory, redis: Any) -> None:
        token = agents.add("ada", "agent")
        agents.remove("ada")
        assert agents.authenticate(token) is None
        assert agents.all() == []
        assert list(redis.scan_iter("ivr:agent*")) == []

    def test_a_stale_index_admits_nobody(self, agents: AgentDirectory, redis: Any) -> None:
        """The digest stored with the agent decides, not the index alone."""
        old = agents.add("ada", "agent")
        agents.rotate("ada")
        redis.set(f"ivr:agent-token:{hashlib.sha256(old.encode()).hexdigest()}", "ada")
        assert agents.authenticate(old) is None

    def test_list_holds_names_roles_and_times(self, agents: AgentDirectory) -> None:
        agents.add("bob", "agent")
        agents.add("ada", "supervisor")
        listed = agents.all()
        assert [(a.name, a.role) for a in listed] == [("ada", "supervisor"), ("bob", "agent")]
        assert all(a.created > 0 for a in listed)


class TestRefusals:
    def test_an_agent_is_added_once(self, agents: AgentDirectory) -> None:
        token = agents.add("ada", "agent")
        with pytest.raises(AgentError, match="already exists; use `ivr agents rotate ada`"):
            agents.add("ada", "specialist")
        agent = agents.authenticate(token)
        assert agent is not None and agent.role == "agent"  # unchanged

    @pytest.mark.parametrize("verb", ["rotate", "remove"])
    def test_no_such_agent(self, agents: AgentDirectory, verb: str) -> None:
        with pytest.raises(AgentError, match="no agent named ghost"):
            getattr(agents, verb)("ghost")

    @pytest.mark.parametrize("name", ["", "Ada", "ada lovelace", "-ada", "a" * 65, "ada\n"])
    def test_bad_names(self, agents: AgentDirectory, name: str) -> None:
        with pytest.raises(AgentError, match="agent name"):
            agents.add(name, "agent")

    @pytest.mark.parametrize("role", ["", "Agent", "super visor", "1st"])
    def test_bad_roles(self, agents: AgentDirectory, role: str) -> None:
        with pytest.raises(AgentError, match="role"):
            agents.add("ada", role)
