"""The agent policy file: a typed model, loaded with located errors, and the view it allows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from ivr.assurance import Assurance
from ivr.auth.agent_policy import (
    AgentPolicy,
    call_view,
    load_agent_policy,
    profile,
    serving_roles,
)
from ivr.errors import AgentPolicyError, SettingsError
from ivr.flows.engine import CallState
from ivr.flows.loader import load_flow
from ivr.store.customers import Customer
from tests.conftest import BASE_CONFIG, FLOWS_DIR, make_app

SHIPPED = FLOWS_DIR / "agents.yaml"
DEFAULT_FLOW = load_flow(FLOWS_DIR / "default.yaml")
GOOD = """\
roles:
  agent:
    one_factor: [first_name, account_status]
  specialist:
    one_factor: [first_name]
    two_factor: [address]
"""


def only_problem(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agents.yaml"
    path.write_text(text)
    with pytest.raises(AgentPolicyError) as caught:
        load_agent_policy(path)
    assert len(caught.value.problems) == 1, str(caught.value)
    return str(caught.value).removeprefix(f"{path}:")


class TestShippedPolicy:
    def test_before_one_factor_every_role_sees_nothing(self) -> None:
        policy = load_agent_policy(SHIPPED)
        for role in ("agent", "specialist", "supervisor"):
            assert policy.fields_for(role, Assurance.none) == ()
            assert policy.fields_for(role, Assurance.identified) == ()

    def test_agent_and_specialist_at_each_level(self) -> None:
        policy = load_agent_policy(SHIPPED)
        at_one = ("first_name", "account_status")
        assert policy.fields_for("agent", Assurance.one_factor) == at_one
        assert policy.fields_for("agent", Assurance.two_factor) == at_one
        assert policy.fields_for("specialist", Assurance.one_factor) == at_one
        assert policy.fields_for("specialist", Assurance.two_factor) == (
            *at_one,
            "name",
            "account",
            "address",
        )

    def test_a_role_it_does_not_name_sees_nothing(self) -> None:
        assert load_agent_policy(SHIPPED).fields_for("intern", Assurance.two_factor) == ()


class TestLoading:
    def test_two_factor_adds_to_one_factor(self, tmp_path: Path) -> None:
        path = tmp_path / "agents.yaml"
        path.write_text(GOOD)
        policy = load_agent_policy(path)
        assert policy.fields_for("specialist", Assurance.two_factor) == ("first_name", "address")

    def test_an_unknown_field_is_located_with_a_suggestion(self, tmp_path: Path) -> None:
        text = GOOD.replace("[address]", "[adress]")
        assert only_problem(tmp_path, text) == (
            "6:18: roles.specialist.two_factor[0]: `adress` is not a field an agent can be shown "
            "(did you mean `address`?)"
        )

    def test_a_secret_is_never_a_field(self, tmp_path: Path) -> None:
        problem = only_problem(tmp_path, GOOD.replace("[address]", "[pin_hash]"))
        assert "`pin_hash` is not a field an agent can be shown" in problem
        assert "write one of first_name, name, account, account_status" in problem

    def test_a_misspelt_level_is_located(self, tmp_path: Path) -> None:
        problem = only_problem(tmp_path, GOOD.replace("two_factor", "tow_factor"))
        assert problem == (
            "6:5: roles.specialist.tow_factor: unknown key `tow_factor` "
            "(did you mean `two_factor`?)"
        )

    def test_no_level_below_one_factor_can_be_written(self, tmp_path: Path) -> None:
        problem = only_problem(tmp_path, GOOD.replace("two_factor", "identified"))
        assert problem.startswith("6:5: roles.specialist.identified: unknown key `identified`")

    def test_a_bad_role_name_is_located(self, tmp_path: Path) -> None:
        problem = only_problem(tmp_path, GOOD.replace("specialist:", "Special Ist:"))
        assert problem.startswith("4:3: roles.Special Ist: `Special Ist` is not a valid role name")

    def test_a_field_listed_twice(self, tmp_path: Path) -> None:
        problem = only_problem(tmp_path, GOOD.replace("[first_name]", "[first_name, first_name]"))
        assert problem.startswith("5:5: roles.specialist.one_factor: ")
        assert "first_name listed twice" in problem

    def test_a_duplicate_role_is_refused_by_the_flow_composer(self, tmp_path: Path) -> None:
        text = GOOD + "  agent:\n    one_factor: [name]\n"
        assert only_problem(tmp_path, text).startswith("7:3: roles: duplicate key `agent`")

    def test_aliases_are_refused_like_in_flows(self, tmp_path: Path) -> None:
        text = "roles:\n  agent: &a\n    one_factor: [name]\n  specialist: *a\n"
        assert "YAML anchor `&a` is not allowed" in only_problem(tmp_path, text)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", "1:1: file is empty (start with `roles:`"),
            ("- agent\n", "1:1: an agent policy is a mapping"),
            ("roles: {}\n", "1:1: roles: "),
        ],
    )
    def test_shapeless_files(self, tmp_path: Path, text: str, expected: str) -> None:
        assert only_problem(tmp_path, text).startswith(expected)

    def test_every_problem_is_listed(self, tmp_path: Path) -> None:
        path = tmp_path / "agents.yaml"
        path.write_text("rolez: {}\n")
        with pytest.raises(AgentPolicyError) as caught:
            load_agent_policy(path)
        assert [str(p).removeprefix(f"{path}:") for p in caught.value.problems] == [
            "1:1: roles: missing required key `roles` (add `roles:`)",
            "1:1: rolez: unknown key `rolez` (did you mean `roles`?)",
        ]


class TestAtStartUp:
    def test_the_app_loads_the_shipped_policy(self) -> None:
        app = make_app(fakeredis.FakeRedis())
        assert isinstance(app.extensions["ivr"].agent_policy, AgentPolicy)

    def test_a_bad_policy_stops_the_app_located(self, tmp_path: Path) -> None:
        path = tmp_path / "agents.yaml"
        path.write_text(GOOD.replace("[address]", "[ssn]"))
        with pytest.raises(
            AgentPolicyError, match=r"agents.yaml:6:18: roles.specialist.two_factor\[0\]: `ssn`"
        ):
            make_app(fakeredis.FakeRedis(), agent_policy=path)

    def test_a_missing_named_policy_names_the_variable(self, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match=r"^IVR_AGENT_POLICY: "):
            make_app(fakeredis.FakeRedis(), agent_policy=tmp_path / "nowhere.yaml")

    def test_no_policy_beside_the_flows_means_none(self) -> None:
        flows = FLOWS_DIR.parent / "tests" / "flows"
        app = make_app(
            fakeredis.FakeRedis(), **{**BASE_CONFIG, "flows_dir": flows, "flow": "reidentify"}
        )
        assert app.extensions["ivr"].agent_policy is None


class TestQueueRoles:
    def test_a_flow_without_queues_lets_every_role_serve(self) -> None:
        assert serving_roles(DEFAULT_FLOW, "card-services") is None

    def test_a_call_in_no_queue_yet_is_every_roles(self) -> None:
        flow = SimpleNamespace(queues={"card-services": SimpleNamespace(roles=["specialist"])})
        assert serving_roles(flow, None) is None

    def test_declared_queues_name_their_roles(self) -> None:
        flow = SimpleNamespace(
            queues={"card-services": SimpleNamespace(roles=["specialist", "supervisor"])}
        )
        assert serving_roles(flow, "card-services") == {"specialist", "supervisor"}
        assert serving_roles(flow, "undeclared") == frozenset()


ALICE = Customer(
    account="12345678",
    phone="+14155550100",
    email="alice@example.com",
    name="Alice Example",
    address="1 Market Street",
    pin_hash="$argon2id$secret",
)


def state(**changes: Any) -> CallState:
    return CallState(call_sid="CA" + "a" * 32, caller="+1", step="x", ref="r" * 16, **changes)


class TestView:
    def test_before_authentication_a_known_and_an_unknown_claim_look_the_same(self) -> None:
        known = call_view(state(account="12345678"), (), profile(ALICE, False))
        unknown = call_view(state(account="unmatched-0f0f"), (), {})
        by_caller_id = call_view(state(account=""), (), {})
        nothing = call_view(state(), (), {})
        assert known == unknown == by_caller_id == nothing
        assert known == {
            "ref": "r" * 16,
            "authenticated": False,
            "assurance": "none",
            "queue": None,
            "methods": [],
            "signals": {},
            "fields": {},
        }

    def test_before_authentication_signals_and_failures_stay_hidden(self) -> None:
        view = call_view(
            state(account="12345678", failures=1, signals={"sim_swap": "recent"}),
            ("first_name",),
            profile(ALICE, False),
        )
        assert view["signals"] == {} and view["fields"] == {}

    def test_after_authentication_only_the_fields_shown(self) -> None:
        view = call_view(
            state(account="12345678", proofs=["pin"], proven_at={"pin": 1_800_000_000.4}),
            ("first_name", "account_status"),
            profile(ALICE, False),
        )
        assert view["authenticated"] is True
        assert view["assurance"] == "one_factor"
        assert view["methods"] == [{"method": "pin", "at": "2027-01-15T08:00:00Z"}]
        assert view["fields"] == {"first_name": "Alice", "account_status": "active"}

    def test_a_proof_with_no_time_recorded(self) -> None:
        view = call_view(state(account="12345678", proofs=["pin"]), (), {})
        assert view["methods"] == [{"method": "pin", "at": None}]

    def test_the_profile_never_holds_a_secret(self) -> None:
        fields = profile(ALICE, True)
        assert fields["account_status"] == "locked"
        assert set(fields) == {
            "first_name",
            "name",
            "account",
            "account_status",
            "email",
            "phone",
            "address",
        }
        assert "$argon2id$secret" not in fields.values()
