"""Twilio Lookup v2 for the number on file: line type and SIM swap, cached per number.

It runs in the worker, just before an SMS code is sent (`workers.jobs.send_code`), never in a
webhook: a webhook must answer well inside Twilio's 15 s, and the caller is on hold for the
code anyway. The job then fails the delivery as unavailable when the signals refuse SMS, and
the caller hears the step's unavailable prompt and is offered another way.

A lookup that fails (network, Twilio error, no access to a package) is "unknown", is not
cached, and blocks nothing; it never counts as a factor either way. Off unless IVR_LOOKUP=on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Final

from redis import Redis
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from ivr.auth import signals
from ivr.flows.engine import CallState
from ivr.settings import Settings
from ivr.store import keys
from ivr.store.audit import AuditLog
from ivr.twilio_api import CLIENT_ERRORS, classify, make_client

log = logging.getLogger(__name__)

FIELDS: Final = "line_type_intelligence,sim_swap"
#: Seconds for the one Lookup request: short, because the caller holds while it runs and the
#: send it precedes must still go out inside the hold.
LOOKUP_TIMEOUT: Final = 3.0
#: What of Twilio's answer is kept (the cache holds no carrier name, no national format).
_KEPT: Final = ("line_type_intelligence", "sim_swap")
LINE_SIGNALS: Final = ("line_type", "sim_swap")


class NumberLookup:
    """Line-type and SIM-swap signals for a number on file; Twilio is asked once per `ttl`."""

    def __init__(
        self,
        client: Client,
        redis: Redis,
        ttl: int,
        window: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.redis = redis
        self.ttl = ttl
        self.window = window
        self.clock = clock

    def signals(self, number: str) -> dict[str, str]:
        """`{"line_type": ..., "sim_swap": recent|none|unknown}`; "unknown" where Lookup
        could not tell."""
        payload = self._payload(number)
        return {
            "line_type": signals.line_type(payload),
            "sim_swap": signals.sim_swap(payload, self.window, self.clock()),
        }

    def _payload(self, number: str) -> Mapping[str, object]:
        key = keys.lookup(number)
        cached = self.redis.get(key)
        if cached is not None:
            try:
                found = json.loads(cached)
            except ValueError:
                found = None
            if isinstance(found, dict):
                return found
        try:
            answer = self.client.lookups.v2.phone_numbers(number).fetch(fields=FIELDS)
        except CLIENT_ERRORS as exc:
            # Twilio's text can quote the number: only the code and status are logged.
            log.warning("lookup failed, signals unknown: %s", classify(exc, "Lookup"))
            return {}
        payload = {name: getattr(answer, name, None) for name in _KEPT}
        self.redis.set(key, json.dumps(payload, separators=(",", ":")), ex=self.ttl)
        return payload


def make_lookup(settings: Settings, redis: Redis) -> NumberLookup | None:
    """The lookup the settings ask for, or None when IVR_LOOKUP is off."""
    if settings.lookup != "on":
        return None
    client = make_client(settings, TwilioHttpClient(timeout=LOOKUP_TIMEOUT))
    return NumberLookup(client, redis, settings.lookup_ttl, settings.sim_swap_window)


class LineSignals:
    """The worker's findings for a call, kept for the web process to fold into the call's
    state (and so into its task attributes): only for the claim they were found for."""

    def __init__(self, redis: Redis, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    def put(self, call_sid: str, claim: str, found: Mapping[str, str]) -> None:
        key = keys.line_signals(call_sid)
        pipe = self.redis.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping={**found, "claim": claim})
        pipe.expire(key, self.ttl)
        pipe.execute()

    def get(self, call_sid: str, claim: str | None) -> dict[str, str]:
        return self.parse(self.redis.hgetall(keys.line_signals(call_sid)), claim)

    @staticmethod
    def parse(raw: Mapping[bytes, bytes], claim: str | None) -> dict[str, str]:
        """The signals in `raw` (the hash `put` wrote) if they were found for `claim`."""
        found = {k.decode(): v.decode() for k, v in raw.items()}
        if claim is None or found.get("claim") != claim:
            return {}
        return {k: v for k, v in found.items() if k in LINE_SIGNALS}

    def fold(self, state: CallState, raw: Mapping[bytes, bytes] | None = None) -> None:
        """Bring `state.signals` up to date: those of the current claim, none of another's.
        `raw`: the hash already read (`SessionStore.take` reads it with the call)."""
        for name in LINE_SIGNALS:
            state.signals.pop(name, None)
        found = self.parse(raw, state.account) if raw is not None else None
        state.signals.update(
            found if found is not None else self.get(state.call_sid, state.account)
        )


def screen_sms(redis: Redis, settings: Settings, call_sid: str, claim: str, to: str) -> str | None:
    """Before an SMS code goes to `to` (the number on file of `claim`): look it up, keep the
    signals for the call and the audit trail, and say why no code may go there, or None.

    With IVR_LOOKUP off this does nothing and refuses nothing."""
    lookup = make_lookup(settings, redis)
    if lookup is None:
        return None
    found = lookup.signals(to)
    LineSignals(redis, settings.session_ttl).put(call_sid, claim, found)
    refusal = signals.sms_refusal(found)
    AuditLog(redis).record(
        "signals",
        call_sid=call_sid,
        account=claim,
        method="sms_otp",
        outcome="refused" if refusal else "allowed",
        detail=" ".join(f"{name}={value}" for name, value in sorted(found.items())),
    )
    return refusal
