"""The one Redis key scheme. Everything this service writes lives under `ivr:`."""

from __future__ import annotations

PREFIX = "ivr"


def call(call_sid: str) -> str:
    return f"{PREFIX}:call:{call_sid}"


def call_lock(call_sid: str) -> str:
    return f"{PREFIX}:call:{call_sid}:lock"


def callref(ref: str) -> str:
    """An agent's handle on a call: the opaque reference -> its CallSid."""
    return f"{PREFIX}:callref:{ref}"


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


ABUSE_GLOBAL = f"{PREFIX}:abuse:global"


def abuse_alerted(window_key: str) -> str:
    """Marks that an alert-only window has alerted, until the time it holds."""
    return f"{window_key}:alerted"


def agent(name: str) -> str:
    """An agent's role, when it was made, and its token's digest (never the token)."""
    return f"{PREFIX}:agent:{name}"


def agent_token(digest: str) -> str:
    """The token digest -> the agent's name, so a read costs one lookup."""
    return f"{PREFIX}:agent-token:{digest}"


AGENTS = f"{PREFIX}:agents"
