"""The audit stream: who tried which method, with what outcome, when. Never the secret."""

from __future__ import annotations

import time
from typing import Any

from redis import Redis

from ivr.flows.engine import CallState
from ivr.store import keys

MAX_EVENTS = 100_000
FIELDS = frozenset(
    {"event", "call_sid", "account", "caller", "method", "outcome", "detail", "agent", "role"}
)


class AuditLog:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def record(self, event: str, **fields: str | None) -> None:
        unknown = set(fields) - FIELDS
        if unknown:
            # A closed field list keeps a careless caller from auditing a PIN "for debugging".
            raise ValueError(f"audit fields not allowed: {sorted(unknown)}")
        entry = {"event": event, "at": f"{time.time():.3f}"}
        entry.update({k: v for k, v in fields.items() if v is not None})
        self.redis.xadd(keys.AUDIT, entry, maxlen=MAX_EVENTS, approximate=True)

    def attempt(
        self, event: str, state: CallState, method: str, outcome: str, detail: str | None = None
    ) -> None:
        """An authentication or delivery event of a call: who, which method, what happened.

        `account` is the call's claim id: a matched account's number, or the keyed digest that
        stands for digits matching none, never those digits themselves (SECURITY 23).
        """
        self.record(
            event,
            call_sid=state.call_sid,
            account=state.account or "",
            caller=state.caller,
            method=method,
            outcome=outcome,
            detail=detail,
        )

    def recent(self, count: int = 50) -> list[dict[str, Any]]:
        return [
            {k.decode(): v.decode() for k, v in values.items()}
            for _, values in self.redis.xrevrange(keys.AUDIT, count=count)
        ]
