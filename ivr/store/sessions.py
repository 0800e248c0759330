"""Call sessions in Redis, keyed by CallSid with a TTL, so any web process can serve any call.

With each state the reply to the request that produced it is kept: Twilio retries a request it
got no answer to, and the retry must get the same answer rather than count a second attempt.

One request of a call runs at a time, under a lock whose life is one request's (LOCK_TIMEOUT),
so Twilio's retry behind a dead holder is still served inside Twilio's 15 s; `save` is fenced by
the lock, so a request that outlived it cannot overwrite the retry that took it over. The
lock's life covers a few Redis commands (2 s each at most, `runtime.connect_redis`) and one
argon2 check or one Twilio Verify check (at most 3 s, `twilio_api.CHECK_TIMEOUT`).

Each round trip to Redis is latency the caller hears and CPU the web process spends, so a
request takes its call in one (`take`: the lock and what the call holds, read together) and
gives it back in one (`save` writes and releases).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import LockError, NoScriptError, RedisError

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
# writes nothing) unless the lock still holds that token; else writes, and releases the lock.
_FENCED_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[2], ARGV[2])
if KEYS[3] then
  redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2])
end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: the call. Marks it over only if it exists: nothing is made for a call never held here.
_MARK_OVER = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'over', 1)
return 1
"""


@dataclass
class CallLock:
    """A request's hold on its call: the lock's key and the token it was taken with, and
    whether it is still held (a successful `save` gives it back)."""

    name: str
    token: bytes
    held: bool = True


@dataclass(frozen=True)
class Taken:
    """What `take` read under the lock it took: the call, and the raw line signals the
    worker left for it (`ivr.lookup.LineSignals.parse` reads them)."""

    lock: CallLock
    stored: Stored | None
    signals: dict[bytes, bytes]


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
        self._mark_over = redis.register_script(_MARK_OVER)

    @contextmanager
    def locked(self, call_sid: str) -> Iterator[CallLock]:
        """One request of a call at a time, across every web process; give the lock to `save`."""
        with self.take(call_sid, read=False) as taken:
            yield taken.lock

    @contextmanager
    def take(self, call_sid: str, *, read: bool = True) -> Iterator[Taken]:
        """`locked`, and the call's session and line signals read under that lock, in one
        round trip when the call is free (the lock first, so the reads count only if it was
        taken); a busy call is waited for as redis-py's Lock waits, then read."""
        name = keys.call_lock(call_sid)
        lock = self.redis.lock(name, timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_WAIT)
        token = secrets.token_hex(16).encode()
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(name, token, nx=True, px=LOCK_TIMEOUT * 1000)
        if read:
            self._reads(pipe, call_sid)
        got, *raw = pipe.execute()
        if got:
            lock.local.token = token  # taken as `lock.acquire` would have, so it can release
        elif lock.acquire(token=token):
            raw = self._reads(self.redis.pipeline(transaction=False), call_sid).execute()
        else:
            raise TimeoutError("call is busy")
        held = CallLock(name, token)
        try:
            yield Taken(held, _stored(raw[0]) if raw else None, raw[1] if raw else {})
        finally:
            if held.held:
                try:
                    lock.release()
                except (LockError, RedisError) as exc:
                    # Nothing was saved; the lock expires on its own within LOCK_TIMEOUT.
                    log.warning("call %s: lock not released (%s)", call_sid, type(exc).__name__)

    @staticmethod
    def _reads(pipe: Pipeline, call_sid: str) -> Pipeline:
        pipe.hgetall(keys.call(call_sid))
        pipe.hgetall(keys.line_signals(call_sid))
        return pipe

    def load(self, call_sid: str) -> Stored | None:
        return _stored(self.redis.hgetall(keys.call(call_sid)))

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
        return bool(self._mark_over(keys=[keys.call(call_sid)]))

    def save(
        self,
        state: CallState,
        reply_seq: int,
        reply: str,
        lock: CallLock,
        *,
        also: Callable[[Pipeline], None] | None = None,
    ) -> None:
        """Store `state` with the reply to request `reply_seq` and release the call's `lock`,
        only while this request still holds it (else LockLost, and nothing is written).

        `also` queues other writes of the same step (the request's audit events) on the
        pipeline the save is sent in, ahead of it: one round trip; they are written whatever
        the save finds."""
        fields = ("state", state.to_json(), "reply_seq", reply_seq, "reply", reply)
        # The reference lives exactly as long as the call it names.
        ref = [keys.callref(state.ref)] if state.ref else []
        save_keys = [lock.name, keys.call(state.call_sid), *ref]
        save_args = [lock.token, self.ttl, state.call_sid, *fields]
        if also is None:
            saved = self._save(keys=save_keys, args=save_args)
        else:
            saved = self._save_with(also, save_keys, save_args)
        if not saved:
            raise LockLost(f"call {state.call_sid}: held longer than {LOCK_TIMEOUT} s")
        lock.held = False

    def _save_with(
        self, also: Callable[[Pipeline], None], save_keys: list[Any], save_args: list[Any]
    ) -> Any:
        # EVALSHA itself: a Script on a pipeline would cost a SCRIPT EXISTS round trip first.
        pipe = self.redis.pipeline(transaction=False)
        also(pipe)
        pipe.evalsha(self._save.sha, len(save_keys), *save_keys, *save_args)
        *others, saved = pipe.execute(raise_on_error=False)
        if isinstance(saved, NoScriptError):  # Redis restarted or flushed its scripts
            saved = self._save(keys=save_keys, args=save_args)
        for result in [*others, saved]:
            if isinstance(result, Exception):
                raise result
        return saved


def _stored(raw: dict[bytes, bytes]) -> Stored | None:
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
