"""Consecutive authentication failures per account and factor, across calls."""

from __future__ import annotations

from redis import Redis

from ivr.store import keys


class FailureCounter:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def count(self, account: str, method: str) -> int:
        return int(self.redis.get(keys.failures(account, method)) or 0)

    def add(self, account: str, method: str) -> int:
        return int(self.redis.incr(keys.failures(account, method)))

    def undo(self, account: str, method: str) -> None:
        """Take back an attempt that never reached the factor (its provider was down)."""
        self.redis.decr(keys.failures(account, method))

    def reset(self, account: str, method: str) -> None:
        self.redis.delete(keys.failures(account, method))
