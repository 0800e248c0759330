"""The one Redis key scheme. Everything this service writes lives under `ivr:`."""

from __future__ import annotations

PREFIX = "ivr"


def call(call_sid: str) -> str:
    return f"{PREFIX}:call:{call_sid}"


def call_lock(call_sid: str) -> str:
    return f"{PREFIX}:call:{call_sid}:lock"


def customer(account: str) -> str:
    return f"{PREFIX}:customer:{account}"


def phone(number: str) -> str:
    return f"{PREFIX}:phone:{number}"


def failures(account: str, method: str) -> str:
    return f"{PREFIX}:failures:{account}:{method}"


AUDIT = f"{PREFIX}:audit"
