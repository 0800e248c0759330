"""Consecutive authentication failures per account and factor, across calls."""

from __future__ import annotations

from redis import Redis

from ivr.store import keys

_UNDO = """
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if left > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


class FailureCounter:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._undo = redis.register_script(_UNDO)

    def count(self, account: str, method: str) -> int:
        return int(self.redis.get(keys.failures(account, method)) or 0)

    def add(self, account: str, method: str) -> int:
        return int(self.redis.incr(keys.failures(account, method)))

    def undo(self, account: str, method: str) -> None:
        """Take back an attempt that was never checked; never below zero, even when a reset
        (a success, `ivr customers reset`) came in between."""
        self._undo(keys=[keys.failures(account, method)])

    def reset(self, account: str, method: str) -> None:
        self.redis.delete(keys.failures(account, method))
