"""Call sessions in Redis, keyed by CallSid with a TTL, so any web process can serve any call.

With each state the reply to the request that produced it is kept: Twilio retries a request it
got no answer to, and the retry must get the same answer rather than count a second attempt.

One request of a call runs at a time, under a lock whose life is one request's (LOCK_TIMEOUT),
so Twilio's retry behind a dead holder is still served inside Twilio's 15 s; `save` is fenced by
the lock, so a request that outlived it cannot overwrite the retry that took it over.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import LockError, RedisError

from ivr.errors import IvrError
from ivr.flows.engine import CallState
from ivr.store import keys

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 3  # one Redis command at its 2 s timeout, plus the rest of a request
LOCK_WAIT = LOCK_TIMEOUT + 1  # outlasts a dead holder's lock; far inside Twilio's 15 s


class LockLost(IvrError):
    """This request held its call's lock longer than LOCK_TIMEOUT; another may now hold it."""


# KEYS: the lock, the call; ARGV: the holder's token, the TTL, then the fields. Returns 0 (and
# writes nothing) unless the lock still holds that token.
_FENCED_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class CallLock:
    """A request's hold on its call: the lock's key and the token it was taken with."""

    name: str
    token: bytes


@dataclass(frozen=True)
class Stored:
    state: CallState
    reply_seq: int | None
    reply: str | None


class SessionStore:
    def __init__(self, redis: Redis, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self._save = redis.register_script(_FENCED_SAVE)

    @contextmanager
    def locked(self, call_sid: str) -> Iterator[CallLock]:
        """One request of a call at a time, across every web process; give the lock to `save`."""
        name = keys.call_lock(call_sid)
        lock = self.redis.lock(name, timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT)
        token = secrets.token_hex(16).encode()
        if not lock.acquire(token=token):
            raise TimeoutError("call is busy")
        try:
            yield CallLock(name, token)
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

    def save(self, state: CallState, reply_seq: int, reply: str, lock: CallLock) -> None:
        """Store `state` with the reply to request `reply_seq`, only while this request still
        holds the call's `lock` (else LockLost, and nothing is written)."""
        fields = ("state", state.to_json(), "reply_seq", reply_seq, "reply", reply)
        saved = self._save(
            keys=[lock.name, keys.call(state.call_sid)], args=[lock.token, self.ttl, *fields]
        )
        if not saved:
            raise LockLost(f"call {state.call_sid}: held longer than {LOCK_TIMEOUT} s")
