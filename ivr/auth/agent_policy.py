"""What an agent may see of a call: one policy file, per role and assurance level.

The file (flows/agents.yaml, `IVR_AGENT_POLICY`) lists, for each role, the profile fields it
may see once the caller has proved one factor, and those it may see on top once they proved
two. There is no level below `one_factor` to write: before authentication an agent sees
nothing, by construction. A typo (`adress:`, `tow_factor:`) is an error with its line, never a
silently narrower or wider view.

What a view holds is decided here, free of Flask and Redis: `call_view` turns a call's state,
the fields allowed and the customer's profile into the agent API's answer.
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ivr.assurance import Assurance
from ivr.errors import AgentPolicyError, FlowDefinitionError, Problem
from ivr.flows.engine import CallState
from ivr.flows.loader import Marks, compose_file, dotted
from ivr.store.agents import ROLE

#: Every field an agent can ever be shown. Never a secret, a code or a failure count; `account`
#: is the account number, which the IVR treats as a claim and a policy may still withhold.
PROFILE_FIELDS = (
    "first_name",
    "name",
    "account",
    "account_status",
    "email",
    "phone",
    "address",
)
ProfileField = Literal[
    "first_name", "name", "account", "account_status", "email", "phone", "address"
]
assert set(ProfileField.__args__) == set(PROFILE_FIELDS)  # type: ignore[attr-defined]
RoleName = Annotated[str, Field(pattern=f"^{ROLE.pattern}$")]
LEVELS = ("one_factor", "two_factor")
AGENT_POLICY_FILE = "agents.yaml"  # in IVR_FLOWS_DIR, unless IVR_AGENT_POLICY says otherwise
_EMPTY_HINT = "start with `roles:`, then a role and the fields it sees at `one_factor:`"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoleFields(_Strict):
    """The fields a role sees at one factor, and those it sees in addition at two."""

    one_factor: tuple[ProfileField, ...] = ()
    two_factor: tuple[ProfileField, ...] = ()

    @field_validator("one_factor", "two_factor")
    @classmethod
    def _once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({f for f in value if value.count(f) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed twice")
        return value


class AgentPolicy(_Strict):
    roles: dict[RoleName, RoleFields] = Field(min_length=1)

    def fields_for(self, role: str, assurance: Assurance) -> tuple[str, ...]:
        """What `role` may see of a call at `assurance`: nothing below one factor, nothing for
        a role the policy does not name."""
        spec = self.roles.get(role)
        if spec is None or assurance < Assurance.one_factor:
            return ()
        shown = list(spec.one_factor)
        if assurance >= Assurance.two_factor:
            shown += [f for f in spec.two_factor if f not in shown]
        return tuple(shown)


def load_agent_policy(path: str | Path) -> AgentPolicy:
    """The policy in `path`; AgentPolicyError lists every problem as file:line:col."""
    try:
        data, marks = compose_file(path, _EMPTY_HINT)
    except FlowDefinitionError as exc:
        raise AgentPolicyError(exc.problems) from None
    if not isinstance(data, dict):
        line, col = marks.get((), (1, 1))
        raise AgentPolicyError(
            [Problem(str(path), line, col, "", "an agent policy is a mapping", _EMPTY_HINT)]
        )
    try:
        return AgentPolicy.model_validate(data)
    except ValidationError as exc:
        raise AgentPolicyError(_problems(exc, marks, str(path))) from None


def _problems(exc: ValidationError, marks: Marks, filename: str) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        at_key = bool(loc) and loc[-1] == "[key]"
        path = loc[:-1] if at_key else loc
        located = path
        while located and located not in marks:
            located = located[:-1]
        line, col = marks.get(located, (None, None))
        message, hint = _explain(err, path, at_key)
        problems.append(Problem(filename, line, col, dotted(path), message, hint))
    return problems


def _explain(err: dict[str, Any], path: tuple[Any, ...], at_key: bool) -> tuple[str, str]:
    kind, name = err["type"], (path[-1] if path else "")
    if kind == "extra_forbidden":
        allowed = list(LEVELS) if len(path) == 3 else ["roles"]
        close = difflib.get_close_matches(str(name), allowed, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"unknown key `{name}`", hint
    if kind == "missing":
        return f"missing required key `{name}`", f"add `{name}:`"
    if kind == "literal_error":
        close = difflib.get_close_matches(str(err.get("input")), PROFILE_FIELDS, n=1)
        hint = (
            f"did you mean `{close[0]}`?" if close else f"write one of {', '.join(PROFILE_FIELDS)}"
        )
        return f"`{err.get('input')}` is not a field an agent can be shown", hint
    if kind == "string_pattern_mismatch" and at_key:
        return f"`{err.get('input')}` is not a valid role name", "use lower-case letters, _ and -"
    return err["msg"], ""


def serving_roles(flow: Any, queue: str | None) -> frozenset[str] | None:
    """The roles that serve `queue`; None means every role.

    LEAD: a stand-in until helper "queues" merges `Flow.queues` (`{name: {roles: [...]}}`);
    then read `flow.queues[queue].roles` directly. A flow without `queues:` (today's), or a
    call not handed to a queue yet, is served by every role; a queue the flow does not
    declare, by none.
    """
    declared = getattr(flow, "queues", None)
    if queue is None or not declared:
        return None
    spec = declared.get(queue)
    return frozenset(spec.roles) if spec is not None else frozenset()


def profile(customer: Any, locked: bool) -> dict[str, str]:
    """Every field of PROFILE_FIELDS the customer record has; `call_view` picks from it."""
    name = (customer.name or "").strip()
    out = {
        "first_name": name.split()[0] if name else None,
        "name": name or None,
        "account": customer.account,
        "account_status": "locked" if locked else "active",
        "email": customer.email,
        "phone": customer.phone,
        "address": customer.address,
    }
    return {k: v for k, v in out.items() if v}


def call_view(state: CallState, shown: tuple[str, ...], fields: dict[str, str]) -> dict[str, Any]:
    """The agent API's answer for a call: before one factor, the same for every call (nothing
    says whether an account was claimed, or exists); after it, the proofs and `shown` fields."""
    assurance = state.assurance
    if assurance < Assurance.one_factor:
        return {
            "ref": state.ref,
            "authenticated": False,
            "assurance": Assurance.none.name,
            "queue": state.queue,
            "methods": [],
            "signals": {},
            "fields": {},
        }
    return {
        "ref": state.ref,
        "authenticated": True,
        "assurance": assurance.name,
        "queue": state.queue,
        "methods": [{"method": m, "at": _when(state.proven_at.get(m))} for m in state.proofs],
        "signals": dict(state.signals),
        "fields": {f: fields[f] for f in shown if f in fields},
    }


def _when(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
