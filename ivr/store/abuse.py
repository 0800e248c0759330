"""The abuse limits' sliding windows in Redis, and the alert raised when one is crossed.

Each window is a sorted set scored by time, trimmed on every write, so a count always means
"within the last `window` seconds": there is no bucket edge for an attacker to straddle. Every
set is bounded: a number's window stops growing once it is refused, and the alert-only windows
keep only as many entries as their limit needs.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from ivr.auth.abuse import (
    AbuseLimits,
    Pattern,
    Trip,
    alert_detail,
    alert_line,
    number_bucket,
    number_caps,
    number_trip,
    over,
)
from ivr.flows.engine import CallState
from ivr.store import keys
from ivr.store.audit import AuditLog

log = logging.getLogger("ivr.abuse")

# KEYS: the number's window, its refusal mark. ARGV: the entry, the account it tries, its score
# (now), the oldest score still in the window (exclusive), the distinct-account cap (-1: none),
# the failure cap, the mark's value (the end of a cool-down) and its TTL, the window's TTL.
# Returns {-1, 0, 0} during a cool-down (nothing counted), {1, accounts, failures} when this
# attempt goes over a cap (then it starts the cool-down, uncounted), else {0, ...} and the attempt
# is counted: one step, so calls racing from one number cannot all slip past the limit.
_ADMIT = """
local refused_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if refused_until > tonumber(ARGV[3]) then
  return {-1, 0, 0}
end
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[4], '+inf')
local seen, accounts = {[ARGV[2]] = true}, 1
for _, entry in ipairs(entries) do
  local account = string.sub(entry, string.find(entry, '|', 1, true) + 1)
  if not seen[account] then
    seen[account], accounts = true, accounts + 1
  end
end
local failures = #entries + 1
local account_cap = tonumber(ARGV[5])
if (account_cap >= 0 and accounts > account_cap) or failures > tonumber(ARGV[6]) then
  redis.call('SET', KEYS[2], ARGV[7], 'EX', ARGV[8])
  return {1, accounts, failures}
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[9])
return {0, accounts, failures}
"""


@dataclass(frozen=True)
class Admission:
    """An attempt let through. It is already in the number's window (counted first, so calls
    racing from one number cannot all slip past the limit) and is taken out again if it
    turns out not to be a failure."""

    bucket: str
    attempt: str  # a random id: the entry is "<attempt>|<account>"
    account: str

    @property
    def entry(self) -> str:
        return f"{self.attempt}|{self.account}"


class AbuseGuard:
    """Admits or refuses each authentication attempt by its calling number; alerts once per
    trip (a structured `ivr.abuse` warning and an `abuse_alert` audit event)."""

    def __init__(
        self,
        redis: Redis,
        limits: AbuseLimits,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.limits = limits
        self.audit = audit
        self.clock = clock
        self._admit = redis.register_script(_ADMIT)

    def admit(self, state: CallState) -> Admission | None:
        """Count this attempt against the calling number, or None: the number is refused.

        The attempt that would go over a limit is itself refused and starts the cool-down;
        attempts during the cool-down are neither checked nor counted.
        """
        limits, now = self.limits, self.clock()
        bucket = number_bucket(state.caller)
        admission = Admission(bucket, secrets.token_hex(8), state.account or "")
        account_cap, failure_cap = number_caps(bucket, limits)
        verdict, accounts, failures = self._admit(
            keys=[keys.abuse_number(bucket), keys.abuse_refused(bucket)],
            args=[
                admission.entry,
                admission.account,
                repr(now),
                repr(now - limits.window),
                -1 if account_cap is None else account_cap,
                failure_cap,
                repr(now + limits.cooldown),
                limits.cooldown,
                limits.window,
            ],
        )
        if verdict == 1:
            trip = number_trip(accounts, failures, bucket, limits)
            assert trip is not None  # the script applied the same caps
            self._alert(trip, state, bucket=bucket)
        return admission if verdict == 0 else None

    def release(self, admission: Admission) -> None:
        """Take back an attempt that was not a failure: a success, or a provider outage.

        Only this attempt's own entry goes; a success never erases the number's earlier
        failures (a sprayer who owns one account must not reset the count with it)."""
        self.redis.zrem(keys.abuse_number(admission.bucket), admission.entry)

    def settle(
        self, admission: Admission, state: CallState, failed: bool, customer: str | None
    ) -> None:
        """The attempt was judged: a failure also counts globally and, for an account that
        exists (`customer`), towards the numbers failing against it. Both only alert."""
        if not failed:
            self.release(admission)
            return
        limits, now = self.limits, self.clock()
        # (pattern, window, its alert mark, member, limit, the account an alert names)
        watched = [
            (Pattern.GLOBAL_FAILURES, keys.ABUSE_GLOBAL, keys.ABUSE_GLOBAL_ALERTED,
             admission.attempt, limits.global_failures, None),
        ]  # fmt: skip
        if customer is not None:
            watched.append(
                (Pattern.ACCOUNT_NUMBERS, keys.abuse_account(customer),
                 keys.abuse_account_alerted(customer), admission.bucket, limits.account_numbers,
                 customer)
            )  # fmt: skip
        pipe = self.redis.pipeline()
        reads = [
            _slide(pipe, window, member, now, limit + 1, limits.window, mark)
            for _, window, mark, member, limit, _ in watched
        ]
        replies = pipe.execute()
        for read, (pattern, _, mark, _, limit, account) in zip(reads, watched, strict=True):
            count, alerted = read(replies)
            trip = over(pattern, count, limit, limits.window)
            if trip is None or _until(alerted) > now:
                continue  # under the limit, or already alerted in this window: no round trip
            if self._claim(mark, now):
                self._alert(trip, state, account=account)

    def refused(self, state: CallState) -> bool:
        """Whether the calling number is in its cool-down (nothing is counted)."""
        mark = keys.abuse_refused(number_bucket(state.caller))
        return _until(self.redis.get(mark)) > self.clock()

    def _claim(self, mark: str, now: float) -> bool:
        """The first to cross an alert-only limit in a window raises the alert; the rest not."""
        window = self.limits.window

        def claim(pipe: Pipeline) -> bool:
            if _until(pipe.get(mark)) > now:
                return False
            pipe.multi()
            pipe.set(mark, repr(now + window), ex=window)
            return True

        return bool(self.redis.transaction(claim, mark, value_from_callable=True))

    def _alert(
        self, trip: Trip, state: CallState, *, bucket: str | None = None, account: str | None = None
    ) -> None:
        # The log shows a masked number and no account; the audit stream, which already names
        # callers and accounts, holds them in full for whoever investigates.
        log.warning(alert_line(trip, bucket, state.call_sid))
        self.audit.record(
            "abuse_alert",
            call_sid=state.call_sid,
            caller=bucket,
            account=account,
            outcome="refused" if trip.refused_for is not None else "alert",
            detail=alert_detail(trip),
        )


def _slide(
    pipe: Pipeline, key: str, member: str, now: float, keep: int, window: int, mark: str
) -> Callable[[list[Any]], tuple[int, bytes | None]]:
    """Queue one window update: add, trim by age, keep the newest `keep` entries (the limit and
    one more tell "over the limit"), count, let the set expire with the window, read the mark.
    Returns how to read the count and the mark from the pipeline's replies."""
    pipe.zadd(key, {member: now})
    pipe.zremrangebyscore(key, "-inf", now - window)
    pipe.zremrangebyrank(key, 0, -(keep + 1))
    count = len(pipe)
    pipe.zcard(key)
    pipe.expire(key, window)
    alerted = len(pipe)
    pipe.get(mark)
    return lambda replies: (replies[count], replies[alerted])


def _until(raw: bytes | None) -> float:
    return float(raw) if raw else 0.0
