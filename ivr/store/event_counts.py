"""Operational counters, derived from the audit trail: one rule per event, one Redis hash.

Every event worth counting (a call started, an authentication outcome, an enqueue, a send, an
abuse-limit trip) is already an audit event, recorded in one place (`AuditLog.record`); the
counter is incremented there, in the same round trip as the stream entry, so nothing else in
the code counts anything and no event can be audited without being counted.

The counters live in Redis rather than in each process's Prometheus registry because the
events happen in web processes and in rq work horses (a fork per job, gone when it ends), on
one machine or on several (a Procfile platform runs web and worker on separate machines): in
Redis every scrape of every web process sees every process's counts, and a restart resets
nothing. Labels are names the code or the flow file chose (methods, outcomes, queues), never
what a caller keyed, so the set of series stays small.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis

from ivr.store import keys

Labels = dict[str, str]
#: Channel of each delivery method, as the metrics name it.
CHANNELS = {"sms_otp": "sms", "email_otp": "email", "callback": "call"}
_LABEL_CHARS = 64


def _call_kind(entry: Mapping[str, str]) -> tuple[str, ...]:
    return ("callback" if "callback" in entry.get("detail", "").split() else "inbound",)


def _abuse_pattern(entry: Mapping[str, str]) -> tuple[str, ...]:
    # detail is "pattern=<name> count=... limit=... window=..." (ivr.auth.abuse.alert_detail)
    fields = dict(part.partition("=")[::2] for part in entry.get("detail", "").split())
    return fields.get("pattern", "?"), entry.get("outcome", "?")


def _send(entry: Mapping[str, str]) -> tuple[str, ...]:
    method = entry.get("method", "")
    return CHANNELS.get(method, method or "?"), entry.get("outcome", "?")


def _fields(*names: str) -> Callable[[Mapping[str, str]], tuple[str, ...]]:
    return lambda entry: tuple(entry.get(name) or "?" for name in names)


@dataclass(frozen=True)
class Rule:
    counter: str
    labels: tuple[str, ...]
    values: Callable[[Mapping[str, str]], tuple[str, ...]]


#: audit event -> the counter it increments and its labels. Nothing else is counted.
RULES = {
    "call_started": Rule("calls_started", ("kind",), _call_kind),
    "authenticate": Rule("authentications", ("method", "outcome"), _fields("method", "outcome")),
    "lockout": Rule("lockouts", ("method",), _fields("method")),
    "enqueued": Rule("enqueues", ("queue", "assurance"), _fields("queue", "assurance")),
    "enqueue_refused": Rule(
        "enqueues_refused", ("queue", "assurance"), _fields("queue", "assurance")
    ),
    "delivery": Rule("sends", ("channel", "outcome"), _send),
    "abuse_alert": Rule("abuse_trips", ("pattern", "outcome"), _abuse_pattern),
}
#: Each counter's label names.
LABELS = {rule.counter: rule.labels for rule in RULES.values()}


def count_field(entry: Mapping[str, str]) -> str | None:
    """The hash field `entry` (an audit entry) increments, or None when it is not counted."""
    rule = RULES.get(entry.get("event", ""))
    if rule is None:
        return None
    values = [value[:_LABEL_CHARS] for value in rule.values(entry)]
    return json.dumps([rule.counter, dict(zip(rule.labels, values, strict=True))], sort_keys=True)


def count(pipe: Any, entry: Mapping[str, str]) -> None:
    """Queue the increment for `entry` on `pipe` (a pipeline: no extra round trip)."""
    field = count_field(entry)
    if field is not None:
        pipe.hincrby(keys.EVENT_COUNTS, field, 1)


def read(redis: Redis) -> list[tuple[str, Labels, int]]:
    """Every counter: (name, labels, count); a field this version does not know is skipped."""
    found = []
    for raw, value in redis.hgetall(keys.EVENT_COUNTS).items():
        try:
            name, labels = json.loads(raw)
        except (ValueError, TypeError):
            continue
        if name in LABELS and isinstance(labels, dict) and set(labels) == set(LABELS[name]):
            found.append((name, labels, int(value)))
    return found
