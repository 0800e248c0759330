"""The agent API: what an agent's screen may show about a live call.

`GET /api/calls/<ref>` with `Authorization: Bearer <agent token>`. The reference is the opaque
one the call was given at its start (it travels to the queue; the CallSid, account and phone
never do). Every refusal, whatever its reason (no such reference, a call that is over, a queue
the agent's role does not serve, a wrong, rotated or removed token), is the same 404, so a
refusal tells a caller of the API nothing; the audit stream says which it was. Every read,
allowed or refused, is audited as `agent_read`, with the agent, the role and the names of the
fields shown, never their values.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ivr.assurance import METHODS
from ivr.auth.agent_policy import call_view, profile, serving_roles
from ivr.flows.engine import CallState
from ivr.runtime import Runtime, runtime
from ivr.store.agents import Agent

log = logging.getLogger(__name__)
bp = Blueprint("agents", __name__, url_prefix="/api/calls")

REF = re.compile(r"[A-Za-z0-9_-]{8,64}")  # secrets.token_urlsafe(12) is 16 characters
NO_SUCH_CALL = "no such call"


def _json(status: int, body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(Exception)
def _unavailable(error: Exception) -> Response:
    """JSON the agent's screen can act on (a 503 it retries), never an HTML page or a 500."""
    if isinstance(error, HTTPException):
        return _json(error.code or 400, {"error": error.description or error.name})
    log.error("agent API failed (%s)", type(error).__name__, exc_info=error)
    return _json(503, {"error": "the agent API is unavailable right now; try again shortly"})


@bp.get("/<path:ref>")  # any path: a malformed reference is refused like the rest
def read_call(ref: str) -> Response:
    rt = runtime()
    agent = rt.agents.authenticate(_bearer())
    state: CallState | None = None
    if agent is None:
        refused = "token"
    elif rt.agent_policy is None:
        refused = "no_policy"
    elif agent.role not in rt.agent_policy.roles:
        refused = "role"  # a role the policy no longer names: fail closed
    else:
        state = rt.sessions.by_ref(ref) if REF.fullmatch(ref) else None
        refused = _refusal(rt, agent, state)
    if refused is not None:
        rt.audit.record(
            "agent_read",
            call_sid=state.call_sid if state is not None else None,
            agent=agent.name if agent else None,
            role=agent.role if agent else None,
            outcome="refused",
            detail=refused,
        )
        return _json(404, {"error": NO_SUCH_CALL})
    assert agent is not None and state is not None and rt.agent_policy is not None
    shown = rt.agent_policy.fields_for(agent.role, state.assurance)
    view = call_view(state, shown, _profile(rt, state, shown))
    rt.audit.record(
        "agent_read",
        call_sid=state.call_sid,
        account=(state.account or None) if view["authenticated"] else None,
        agent=agent.name,
        role=agent.role,
        outcome="allowed",
        detail=f"assurance={view['assurance']} fields={','.join(view['fields']) or '-'}",
    )
    return _json(200, view)


def _bearer() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _refusal(rt: Runtime, agent: Agent, state: CallState | None) -> str | None:
    if state is None:
        return "unknown_ref"
    # (`by_ref` finds no call Twilio said has ended.) It left the IVR without a queue: hung up.
    if state.ended and state.queue is None:
        return "over"
    roles = serving_roles(rt.pinned(state).flow, state.queue)
    if roles is not None and agent.role not in roles:
        return "queue"
    return None


def _profile(rt: Runtime, state: CallState, shown: tuple[str, ...]) -> dict[str, str]:
    """The claimed customer's fields, read only when some may be shown."""
    if not shown or not state.account:
        return {}
    customer = rt.customers.get(state.account)
    if customer is None:
        return {}
    locked = "account_status" in shown and any(
        rt.counter.count(customer.account, m) >= rt.settings.account_max_failures for m in METHODS
    )
    return profile(customer, locked)
