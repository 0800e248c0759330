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


def otp(call_sid: str, method: str) -> str:
    return f"{PREFIX}:otp:{call_sid}:{method}"


def delivery(call_sid: str, method: str) -> str:
    return f"{PREFIX}:delivery:{call_sid}:{method}"


def sends(scope: str, value: str) -> str:
    return f"{PREFIX}:sends:{scope}:{value}"


def service_code(account: str) -> str:
    return f"{PREFIX}:service-code:{account}"


def callback(call_sid: str) -> str:
    return f"{PREFIX}:callback:{call_sid}"


def abuse_number(bucket: str) -> str:
    return f"{PREFIX}:abuse:number:{bucket}"


def abuse_refused(bucket: str) -> str:
    return f"{PREFIX}:abuse:refused:{bucket}"


def abuse_account(account: str) -> str:
    return f"{PREFIX}:abuse:account:{account}"


def abuse_account_alerted(account: str) -> str:
    """Marks that the account's window has alerted, until the time it holds."""
    return f"{abuse_account(account)}:alerted"


ABUSE_GLOBAL = f"{PREFIX}:abuse:global"
ABUSE_GLOBAL_ALERTED = f"{ABUSE_GLOBAL}:alerted"  # as `abuse_account_alerted`, service-wide
