"""Possession proofs in Redis: code digests, delivery records, callback references.

No code is ever stored here in clear: only `ivr.auth.codes` digests, which expire with the code.
A delivery record holds what a send job needs (the claim, the deadline, a callback's reference),
so job arguments are opaque ids.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from redis import Redis
from redis.client import Pipeline

from ivr.auth.codes import IssuedCode
from ivr.store import keys

DeliveryState = Literal["pending", "sent", "failed", "abandoned"]
VERIFY_MARK = "verify"  # Twilio Verify holds the code; we only know one was sent

# KEYS: the delivery records, then the code keys, as many of each. A record that is gone stays
# gone (no half record for a job to misread); every code goes.
_ABANDON = """
local half = #KEYS / 2
for i = 1, half do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HSET', KEYS[i], 'status', 'abandoned')
  end
end
redis.call('DEL', unpack(KEYS, half + 1))
return 0
"""


@dataclass(frozen=True)
class CallbackRef:
    """What a callback call inherits from the call that asked for it."""

    call_sid: str
    caller: str
    account: str  # the claim id (a callback is only ever placed for a matched account)
    proofs: list[str]
    failures: int
    step: str  # the callback step, where the call back is answered
    proven_at: dict[str, float] = field(default_factory=dict)  # when each of `proofs` was made
    flow_version: str = ""  # the version the asking call started on: the call back's too


@dataclass(frozen=True)
class DeliveryRecord:
    """One send a call asked for, and everything its job needs to make it.

    The job is given only opaque ids (call, method, nonce) and reads the rest here, because rq
    keeps and logs job arguments: no account number or phone number travels with a job.
    """

    nonce: str
    status: DeliveryState
    claim: str  # the account claimed when the send was asked for: the code is bound to it
    deadline: float  # epoch seconds; from then on the send is refused (the caller gave up)
    callback: CallbackRef | None = None

    def open(self, now: float) -> bool:
        return self.status == "pending" and now < self.deadline


class CodeStore:
    """One-time codes, bound to a call, method and claim; service codes, bound to an account.

    A delivery moves from `pending` to exactly one of `sent`, `failed` or `abandoned`, and only
    the job holding its current nonce moves it: a settled or abandoned delivery is final, so a
    late job can neither revive a send the caller was told had failed nor issue its code.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._abandon = redis.register_script(_ABANDON)

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

    def open_delivery(
        self,
        call_sid: str,
        method: str,
        nonce: str,
        *,
        claim: str,
        deadline: float,
        ttl: int,
        callback: CallbackRef | None = None,
    ) -> None:
        """A new send for this call and method; any earlier one still running is superseded.

        Every send's claim stays in the record (`claim:<nonce>`; a call makes only a few sends),
        so a superseded job that never sent can hand back what it was counted against.
        """
        key = keys.delivery(call_sid, method)
        fields = {"status": "pending", "nonce": nonce, "deadline": repr(deadline)}
        fields[f"claim:{nonce}"] = claim
        if callback is not None:
            fields["callback"] = json.dumps(asdict(callback))
        pipe = self.redis.pipeline()
        pipe.hdel(key, "callback")
        pipe.hset(key, mapping=fields)
        pipe.expire(key, ttl)
        pipe.execute()

    def claim_of(self, call_sid: str, method: str, nonce: str) -> str | None:
        """The claim the send `nonce` was asked for, current or superseded."""
        raw = self.redis.hget(keys.delivery(call_sid, method), f"claim:{nonce}")
        return raw.decode() if raw is not None else None

    def delivery_record(self, call_sid: str, method: str) -> DeliveryRecord | None:
        return _record(self.redis.hgetall(keys.delivery(call_sid, method)))

    def delivery(self, call_sid: str, method: str) -> DeliveryState | None:
        raw = self.redis.hget(keys.delivery(call_sid, method), "status")
        return raw.decode() if raw is not None else None  # type: ignore[return-value]

    def pending(self, call_sid: str, method: str, nonce: str, now: float) -> DeliveryRecord | None:
        """The send `nonce`, if it is still the current one, pending and within its deadline."""
        record = self.delivery_record(call_sid, method)
        return record if record and record.nonce == nonce and record.open(now) else None

    def settle(
        self,
        call_sid: str,
        method: str,
        nonce: str,
        ttl: int,
        *,
        status: DeliveryState | None = None,
        issue: IssuedCode | str | None = None,
        void: bool = False,
        now: float | None = None,
    ) -> bool:
        """Record what the send `nonce` did, only if it is still current and pending.

        Issuing a code also needs `now` inside the deadline. A late job (a retry outliving the
        caller's hold, say) must neither overwrite the code of a newer send, nor mark it failed,
        nor issue a code once the caller was told the send failed; WATCH makes the check and
        the write one step, so an `abandon` in between makes the job look again.
        """
        if issue is not None and now is None:
            raise ValueError("issuing a code needs `now`, to hold it to the delivery's deadline")
        key = keys.delivery(call_sid, method)

        def update(pipe: Pipeline) -> bool:
            record = _record(pipe.hgetall(key))
            if record is None or record.nonce != nonce or record.status != "pending":
                return False
            if issue is not None and not record.open(now):  # type: ignore[arg-type]
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

    def abandon(self, call_sid: str, *methods: str) -> None:
        """Void these sends of the call and their codes, whatever state they are in.

        For when the caller has been told a send failed, or claims another account: one script
        over the delivery records, so a job issuing a code at the same moment either finishes
        first (and its code is deleted here) or finds its send abandoned.
        """
        records = [keys.delivery(call_sid, m) for m in methods]
        self._abandon(keys=[*records, *(keys.otp(call_sid, m) for m in methods)])

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


def _record(raw: dict[bytes, bytes]) -> DeliveryRecord | None:
    """A delivery hash as written by `open_delivery`; anything else (an older release's
    record, say) is no delivery at all, so its job refuses to send."""
    values = {k.decode(): v.decode() for k, v in raw.items()}
    try:
        callback = values.get("callback")
        return DeliveryRecord(
            nonce=values["nonce"],
            status=values["status"],  # type: ignore[arg-type]
            claim=values[f"claim:{values['nonce']}"],
            deadline=float(values["deadline"]),
            callback=CallbackRef(**json.loads(callback)) if callback else None,
        )
    except (KeyError, ValueError, TypeError):
        return None


def _encode(issued: IssuedCode | str) -> str:
    return issued if isinstance(issued, str) else json.dumps(asdict(issued))


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
