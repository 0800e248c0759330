"""Send caps: how many codes and call backs may go out, per call, account, destination, prefix.

A send costs money and reaches a person, so it is capped before it is queued (SMS pumping,
SECURITY 14), and only sends that happen are counted (SECURITY 30): one request counts against
every scope or none, and a send the worker does not make is handed back (`refund`). Known and
unknown accounts are counted alike so a refusal tells a caller nothing; the destination and
prefix scopes, shared by customers, count only real destinations on file. The call scope is never
refunded: it bounds what one call may ask for. The README's "Send caps" paragraph has the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redis import Redis

from ivr.auth.codes import country_prefix
from ivr.store import keys

CapName = Literal["call", "account", "destination", "prefix"]

# KEYS: the counters; ARGV: limit and window of each, in the same order. Returns 0 when every
# counter had room (then each is counted), else the 1-based index of the first one that had none
# (then none is counted): the check and the count are one step, whatever other processes do.
_TAKE = """
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[2 * i - 1]) then
    return i
  end
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, 0, 'EX', ARGV[2 * i], 'NX')
  redis.call('INCR', key)
end
return 0
"""

# Never below zero, and never a counter that is gone (its window closed): DECR keeps the TTL.
_REFUND = """
for _, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count > 0 then
    redis.call('DECR', key)
  end
end
return 0
"""


@dataclass(frozen=True)
class SendLimits:
    account: int
    destination: int
    prefix: int
    window: int
    per_call: int
    call_window: int  # as long as a call's state lives


@dataclass(frozen=True)
class SendScopes:
    """What one send counts against."""

    call: str
    account: str
    destination: str | None
    prefix: str | None

    @classmethod
    def of(cls, call_sid: str, account: str | None, method: str, to: str | None) -> SendScopes:
        """`to` is the destination on file (None when there is none); texts and call backs
        count against the destination's country prefix, emails do not."""
        return cls(
            call=call_sid,
            # A caller-ID claim that matched nothing is capped per call, so unmatched callers
            # never share one counter that would sound different from a customer's.
            account=account or f"call-{call_sid}",
            destination=to,
            prefix=country_prefix(to) if to and method != "email_otp" else None,
        )


@dataclass(frozen=True)
class SendDecision:
    capped: CapName | None  # the first cap that refused; None when the send may go

    @property
    def allowed(self) -> bool:
        return self.capped is None

    def __bool__(self) -> bool:
        return self.allowed


class SendLimiter:
    def __init__(self, redis: Redis, limits: SendLimits) -> None:
        self.redis = redis
        self.limits = limits
        self._take = redis.register_script(_TAKE)

    def allow(self, scopes: SendScopes) -> SendDecision:
        """Count one send against every scope if each has room; otherwise count nothing."""
        limits = self.limits
        counted: list[tuple[CapName, str, int, int]] = [
            ("call", scopes.call, limits.per_call, limits.call_window),
            ("account", scopes.account, limits.account, limits.window),
        ]
        if scopes.destination:
            counted.append(("destination", scopes.destination, limits.destination, limits.window))
        if scopes.prefix:
            counted.append(("prefix", scopes.prefix, limits.prefix, limits.window))
        refused = int(
            self._take(
                keys=[keys.sends(scope, value) for scope, value, _, _ in counted],
                args=[n for _, _, limit, window in counted for n in (limit, window)],
            )
        )
        return SendDecision(counted[refused - 1][0] if refused else None)


def refund(redis: Redis, scopes: SendScopes) -> None:
    """Hand back a send that was allowed but not made; the call scope keeps it."""
    refunded = [("account", scopes.account)]
    if scopes.destination:
        refunded.append(("destination", scopes.destination))
    if scopes.prefix:
        refunded.append(("prefix", scopes.prefix))
    redis.register_script(_REFUND)(keys=[keys.sends(scope, value) for scope, value in refunded])
