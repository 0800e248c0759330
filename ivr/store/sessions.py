"""Call sessions in Redis, keyed by CallSid with a TTL, so any web process can serve any call.

With each state the reply to the request that produced it is kept: Twilio retries a request it
got no answer to, and the retry must get the same answer rather than count a second attempt.

One request of a call runs at a time, under a lock whose life is one request's (LOCK_TIMEOUT),
so Twilio's retry behind a dead holder is still served inside Twilio's 15 s; `save` is fenced by
the lock, so a request that outlived it cannot overwrite the retry that took it over. The
lock's life covers a few Redis commands (2 s each at most, `runtime.connect_redis`) and one
argon2 check or one Twilio Verify check (at most 3 s, `twilio_api.CHECK_TIMEOUT`).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import LockError, RedisError

from ivr.errors import IvrError
from ivr.flows.engine import CallState
from ivr.store import keys

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 6  # a Redis command at its 2 s timeout, a Verify check at its 3 s, and the rest
LOCK_WAIT = LOCK_TIMEOUT + 1  # outlasts a dead holder's lock; far inside Twilio's 15 s
REF = re.compile(r"[A-Za-z0-9_-]{16}")  # secrets.token_urlsafe(12)
OVER_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


class LockLost(IvrError):
    """This request held its call's lock longer than LOCK_TIMEOUT; another may now hold it."""


# KEYS: the lock, the call; ARGV: the holder's token, the TTL, then the fields. Returns 0 (and
# writes nothing) unless the lock still holds that token.
_FENCED_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[2], ARGV[2])
if KEYS[3] then
  redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2])
end
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
    over: bool = False  # Twilio said the phone call has ended (`mark_over`)


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
            raw.get(b"over") == b"1",
        )

    def by_ref(self, ref: str) -> CallState | None:
        """The live call known by the opaque reference `ref`, or None: no such reference, the
        call expired, or the phone call is over. All three look alike to whoever asks."""
        if not REF.fullmatch(ref):
            return None
        call_sid = self.redis.get(keys.callref(ref))
        stored = self.load(call_sid.decode()) if call_sid is not None else None
        if stored is None or stored.over or stored.state.ref != ref:
            return None
        return stored.state

    def mark_over(self, call_sid: str) -> bool:
        """Twilio's status callback says the call ended: mark it over (nothing else changes,
        least of all what was proven). Only a call we hold is marked; returns whether it was."""
        key = keys.call(call_sid)

        def write(pipe: Pipeline) -> bool:
            if not pipe.exists(key):
                return False  # never created here, or expired: nothing to mark, nothing made
            pipe.multi()
            pipe.hset(key, "over", 1)
            return True

        return bool(self.redis.transaction(write, key, value_from_callable=True))

    def save(self, state: CallState, reply_seq: int, reply: str, lock: CallLock) -> None:
        """Store `state` with the reply to request `reply_seq`, only while this request still
        holds the call's `lock` (else LockLost, and nothing is written)."""
        fields = ("state", state.to_json(), "reply_seq", reply_seq, "reply", reply)
        # The reference lives exactly as long as the call it names.
        ref = [keys.callref(state.ref)] if state.ref else []
        saved = self._save(
            keys=[lock.name, keys.call(state.call_sid), *ref],
            args=[lock.token, self.ttl, state.call_sid, *fields],
        )
        if not saved:
            raise LockLost(f"call {state.call_sid}: held longer than {LOCK_TIMEOUT} s")
