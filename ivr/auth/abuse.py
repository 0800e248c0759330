"""Abuse limits: how fast one calling number, one account and the whole service may fail.

The per-call budget and the per-account lockout bound the guesses at *one* account; they do
nothing against one PIN sprayed across many accounts, a call at a time. These rules do: a calling
number that fails too often, or against too many accounts, within a sliding window is refused
for a cool-down; many numbers failing against one account, or a spike of failures across the
service, raise an alert. The rules are pure: Redis keeps the windows (`ivr.store.abuse`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

#: The one bucket every caller without a usable caller ID shares.
WITHHELD = "withheld"
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# Keypad spellings of the labels a withheld caller ID arrives as: ANONYMOUS (+266696687, which
# Twilio documents for `From`), RESTRICTED, BLOCKED, UNKNOWN, UNAVAILABLE. The words themselves,
# SIP URIs, client identities and an empty `From` are not E.164 and land in the same bucket.
_WITHHELD_NUMBERS = frozenset({"+266696687", "+7378742833", "+2562533", "+8656696", "+86282452253"})
_SHOWN_DIGITS_HIDDEN = 4


class Pattern(StrEnum):
    """What an alert is about; the names are what the log line and the audit event carry."""

    NUMBER_FAILURES = "many_failures_from_one_number"
    NUMBER_ACCOUNTS = "many_accounts_from_one_number"
    ACCOUNT_NUMBERS = "one_account_from_many_numbers"
    GLOBAL_FAILURES = "global_failure_spike"


@dataclass(frozen=True)
class AbuseLimits:
    """Every limit is what is allowed within `window` seconds; one more trips it."""

    window: int
    cooldown: int
    number_failures: int
    number_accounts: int
    withheld_failures: int
    account_numbers: int
    global_failures: int


@dataclass(frozen=True)
class Trip:
    """A limit crossed: `count` went over `limit` within `window` seconds."""

    pattern: Pattern
    count: int
    limit: int
    window: int
    refused_for: int | None = None  # seconds the calling number is refused; None: alert only


def number_bucket(caller: str) -> str:
    """The calling number a window is kept for: an E.164 number, else the shared `WITHHELD`.

    A withheld caller ID cannot be told apart from the next one, so they share one bucket
    rather than escape the limits; that bucket has a higher limit of its own.
    """
    if _E164.fullmatch(caller) and caller not in _WITHHELD_NUMBERS:
        return caller
    return WITHHELD


def masked(bucket: str) -> str:
    """A calling number for a log line: enough to spot a range, not enough to dial it."""
    if bucket == WITHHELD:
        return bucket
    return bucket[:-_SHOWN_DIGITS_HIDDEN] + "*" * _SHOWN_DIGITS_HIDDEN


def number_verdict(
    tried: Iterable[str], account: str, bucket: str, limits: AbuseLimits
) -> Trip | None:
    """Whether one more attempt from `bucket` at `account` goes over a per-number limit.

    `tried` holds the account of each failure the number still has in the window.
    """
    tried = list(tried)
    return number_trip(len(set(tried) | {account}), len(tried) + 1, bucket, limits)


def number_caps(bucket: str, limits: AbuseLimits) -> tuple[int | None, int]:
    """The per-number limits of `bucket`: (distinct accounts, failures) within the window.

    The shared withheld bucket has no distinct-account limit (None): its failures come from
    many callers, each at their own account, so the count of accounts there says nothing
    about one of them; it has a failure limit of its own instead.
    """
    if bucket == WITHHELD:
        return None, limits.withheld_failures
    return limits.number_accounts, limits.number_failures


def number_trip(accounts: int, failures: int, bucket: str, limits: AbuseLimits) -> Trip | None:
    """The per-number limit an attempt goes over, counting it: `accounts` distinct accounts
    and `failures` failures within the window (see `number_caps`), or None."""
    account_cap, failure_cap = number_caps(bucket, limits)
    if account_cap is not None and accounts > account_cap:
        return Trip(Pattern.NUMBER_ACCOUNTS, accounts, account_cap, limits.window, limits.cooldown)
    if failures > failure_cap:
        return Trip(Pattern.NUMBER_FAILURES, failures, failure_cap, limits.window, limits.cooldown)
    return None


def over(pattern: Pattern, count: int, limit: int, window: int) -> Trip | None:
    """An alert-only limit (per account, global): over once `count` exceeds `limit`."""
    return Trip(pattern, count, limit, window) if count > limit else None


def alert_line(trip: Trip, bucket: str | None, call_sid: str) -> str:
    """The one log line of an alert, key=value: never a PIN, never a full number or account."""
    parts = [f"pattern={trip.pattern.value}"]
    if bucket is not None:
        parts.append(f"caller={masked(bucket)}")
    parts += [f"count={trip.count}", f"limit={trip.limit}", f"window={trip.window}s"]
    if trip.refused_for is not None:
        parts += ["action=refused", f"cooldown={trip.refused_for}s"]
    else:
        parts.append("action=alert")
    parts.append(f"call_sid={call_sid}")
    return "abuse alert " + " ".join(parts)


def alert_detail(trip: Trip) -> str:
    """The audit event's `detail`: the pattern first, then the numbers behind it."""
    pattern = trip.pattern.value
    return f"pattern={pattern} count={trip.count} limit={trip.limit} window={trip.window}"
