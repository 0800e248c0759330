"""Possession proofs in Redis: code digests, delivery status, callback references.

No code is ever stored here in clear: only `ivr.auth.codes` digests, which expire with the code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

from redis import Redis
from redis.client import Pipeline

from ivr.auth.codes import IssuedCode
from ivr.store import keys

DeliveryStatus = Literal["pending", "sent", "failed"]
VERIFY_MARK = "verify"  # Twilio Verify holds the code; we only know one was sent


class CodeStore:
    """One-time codes, bound to a call and method; and service codes, bound to an account."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def issue_otp(self, call_sid: str, method: str, issued: IssuedCode | str, ttl: int) -> None:
        """Replace any earlier code of this call and method (a resend voids the old code)."""
        self._put(keys.otp(call_sid, method), issued, ttl)

    def otp(self, call_sid: str, method: str) -> IssuedCode | str | None:
        return self._get(keys.otp(call_sid, method))

    def consume_otp(self, call_sid: str, method: str) -> bool:
        """Single use: only the first of two racing correct answers wins."""
        return bool(self.redis.delete(keys.otp(call_sid, method)))

    def issue_service_code(self, account: str, issued: IssuedCode, ttl: int) -> None:
        self._put(keys.service_code(account), issued, ttl)

    def service_code(self, account: str) -> IssuedCode | None:
        found = self._get(keys.service_code(account))
        return found if isinstance(found, IssuedCode) else None

    def consume_service_code(self, account: str) -> bool:
        return bool(self.redis.delete(keys.service_code(account)))

    def open_delivery(self, call_sid: str, method: str, nonce: str, ttl: int) -> None:
        """A new send for this call and method; any earlier one still running is superseded."""
        key = keys.delivery(call_sid, method)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={"status": "pending", "nonce": nonce})
        pipe.expire(key, ttl)
        pipe.execute()

    def delivery(self, call_sid: str, method: str) -> DeliveryStatus | None:
        raw = self.redis.hget(keys.delivery(call_sid, method), "status")
        return raw.decode() if raw else None  # type: ignore[return-value]

    def is_current(self, call_sid: str, method: str, nonce: str) -> bool:
        return self.redis.hget(keys.delivery(call_sid, method), "nonce") == nonce.encode()

    def settle(
        self,
        call_sid: str,
        method: str,
        nonce: str,
        ttl: int,
        *,
        status: DeliveryStatus | None = None,
        issue: IssuedCode | str | None = None,
        void: bool = False,
    ) -> bool:
        """Record what the send `nonce` did, only if it is still the current one.

        A late job (a retry outliving the caller's hold, say) must neither overwrite the code
        of a newer send nor mark it failed; WATCH makes the check and the write one step.
        """
        key = keys.delivery(call_sid, method)

        def update(pipe: Pipeline) -> bool:
            if pipe.hget(key, "nonce") != nonce.encode():
                return False
            pipe.multi()
            if status is not None:
                pipe.hset(key, "status", status)
            if issue is not None:
                pipe.set(keys.otp(call_sid, method), _encode(issue), ex=ttl)
            if void:
                pipe.delete(keys.otp(call_sid, method))
            return True

        return bool(self.redis.transaction(update, key, value_from_callable=True))

    def _put(self, key: str, issued: IssuedCode | str, ttl: int) -> None:
        self.redis.set(key, _encode(issued), ex=ttl)

    def _get(self, key: str) -> IssuedCode | str | None:
        raw = self.redis.get(key)
        if raw is None:
            return None
        text = raw.decode()
        if text == VERIFY_MARK:
            return VERIFY_MARK
        return IssuedCode(**json.loads(text))


def _encode(issued: IssuedCode | str) -> str:
    return issued if isinstance(issued, str) else json.dumps(asdict(issued))


@dataclass(frozen=True)
class CallbackRef:
    """What a callback call inherits from the call that asked for it."""

    call_sid: str
    caller: str
    account: str
    proofs: list[str]
    failures: int
    step: str  # the callback step, where the call back is answered


class CallbackRefs:
    """Keyed by the CallSid Twilio gave the outbound call: only Twilio can present it."""

    def __init__(self, redis: Redis, ttl: int = 300) -> None:
        self.redis = redis
        self.ttl = ttl

    def put(self, callback_sid: str, ref: CallbackRef) -> None:
        self.redis.set(keys.callback(callback_sid), json.dumps(asdict(ref)), ex=self.ttl)

    def take(self, callback_sid: str) -> CallbackRef | None:
        """Single use: the reference is gone once the callback call has claimed it."""
        raw = self.redis.getdel(keys.callback(callback_sid))
        return CallbackRef(**json.loads(raw)) if raw else None
