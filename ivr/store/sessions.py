"""Call sessions in Redis, keyed by CallSid with a TTL, so any web process can serve any call.

With each state the reply to the request that produced it is kept: Twilio retries a request it
got no answer to, and the retry must get the same answer rather than count a second attempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis

from ivr.flows.engine import CallState
from ivr.store import keys

LOCK_TIMEOUT = 20  # longer than any one request can take (Twilio HTTP timeout: 10 s)
LOCK_WAIT = 8  # well inside Twilio's 15 s budget


@dataclass(frozen=True)
class Stored:
    state: CallState
    reply_seq: int | None
    reply: str | None


class SessionStore:
    def __init__(self, redis: Redis, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    @contextmanager
    def locked(self, call_sid: str) -> Iterator[None]:
        """One request of a call at a time, across every web process."""
        lock = self.redis.lock(
            keys.call_lock(call_sid), timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT
        )
        if not lock.acquire():
            raise TimeoutError("call is busy")
        try:
            yield
        finally:
            lock.release()

    def load(self, call_sid: str) -> Stored | None:
        raw = self.redis.hgetall(keys.call(call_sid))
        if not raw or b"state" not in raw:
            return None
        seq = raw.get(b"reply_seq")
        reply = raw.get(b"reply")
        return Stored(
            CallState.from_json(raw[b"state"]),
            int(seq) if seq is not None else None,
            reply.decode() if reply is not None else None,
        )

    def save(self, state: CallState, reply_seq: int, reply: str) -> None:
        key = keys.call(state.call_sid)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={"state": state.to_json(), "reply_seq": reply_seq, "reply": reply})
        pipe.expire(key, self.ttl)
        pipe.execute()
