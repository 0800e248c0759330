"""Call sessions in Redis, keyed by CallSid with a TTL, so any web process can serve any call.

With each state the reply to the request that produced it is kept: Twilio retries a request it
got no answer to, and the retry must get the same answer rather than count a second attempt.

One request of a call runs at a time, under a lock whose life is one request's: the work under
it is a few Redis commands (each gives up after 2 s, `runtime.connect_redis`) and at most one
argon2 check (~25 ms), so a request that still holds it after LOCK_TIMEOUT has died (a killed
worker, a Redis freeze that ate the release). Twilio's retry then waits at most LOCK_TIMEOUT
for it, well inside Twilio's 15 s, and is served normally. A request that outlived its lock
anyway cannot save over the retry that took it over: `save` is fenced by the lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import LockError, RedisError
from redis.lock import Lock

from ivr.flows.engine import CallState
from ivr.store import keys

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 3  # one Redis command at its 2 s timeout, plus the rest of a request
LOCK_WAIT = LOCK_TIMEOUT + 1  # outlasts a dead holder's lock; far inside Twilio's 15 s


class LockLost(RedisError):
    """This request held its call's lock longer than LOCK_TIMEOUT; another may now hold it."""


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
    def locked(self, call_sid: str) -> Iterator[Lock]:
        """One request of a call at a time, across every web process; give the lock to `save`."""
        lock = self.redis.lock(
            keys.call_lock(call_sid), timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT
        )
        if not lock.acquire():
            raise TimeoutError("call is busy")
        try:
            yield lock
        finally:
            try:
                lock.release()
            except (LockError, RedisError) as exc:
                # What was saved stands; the lock expires on its own within LOCK_TIMEOUT.
                log.warning("call %s: lock not released (%s)", call_sid, type(exc).__name__)

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

    def save(self, state: CallState, reply_seq: int, reply: str, lock: Lock | None = None) -> None:
        """Store `state` with the reply to request `reply_seq`; with the call's `lock`, only
        while this request still holds it (else LockLost, and nothing is written)."""
        key = keys.call(state.call_sid)
        mapping = {"state": state.to_json(), "reply_seq": reply_seq, "reply": reply}

        def write(pipe: Pipeline) -> None:
            if lock is not None and pipe.get(lock.name) != lock.local.token:
                raise LockLost(f"call {state.call_sid}: held longer than {LOCK_TIMEOUT} s")
            pipe.multi()
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, self.ttl)
            if state.ref:  # lives exactly as long as the call it points at
                pipe.set(keys.callref(state.ref), state.call_sid, ex=self.ttl)

        self.redis.transaction(write, *([lock.name] if lock is not None else []))

    def by_ref(self, ref: str) -> CallState | None:
        """The call an agent's reference points at, or None (unknown, or expired)."""
        call_sid = self.redis.get(keys.callref(ref))
        if call_sid is None:
            return None
        stored = self.load(call_sid.decode())
        return stored.state if stored is not None and stored.state.ref == ref else None

    def mark_over(self, call_sid: str) -> None:
        """Twilio says the call has ended: agents may no longer read it. Only a call we hold
        is marked (a stray status never creates a key), and nothing else in it changes."""
        key = keys.call(call_sid)

        def write(pipe: Pipeline) -> None:
            if pipe.exists(key):
                pipe.multi()
                pipe.hset(key, "over", 1)

        self.redis.transaction(write, key)

    def is_over(self, call_sid: str) -> bool:
        return self.redis.hget(keys.call(call_sid), "over") is not None
