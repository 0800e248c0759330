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


def abuse_account_alerted(account: str) -> str:
    """Marks that the account's window has alerted, until the time it holds."""
    return f"{abuse_account(account)}:alerted"


ABUSE_GLOBAL = f"{PREFIX}:abuse:global"
ABUSE_GLOBAL_ALERTED = f"{ABUSE_GLOBAL}:alerted"  # as `abuse_account_alerted`, service-wide


def line_signals(call_sid: str) -> str:
    """Risk signals the worker found for the number on file of the call's claim."""
    return f"{PREFIX}:signals:{call_sid}"


def lookup(number: str) -> str:
    """Twilio Lookup's answer for a number on file, cached."""
    return f"{PREFIX}:lookup:{number}"


def agent(name: str) -> str:
    """An agent's role, when it was made, and its token's digest (never the token)."""
    return f"{PREFIX}:agent:{name}"


def agent_token(digest: str) -> str:
    """The token digest -> the agent's name, so a read costs one lookup."""
    return f"{PREFIX}:agent-token:{digest}"


AGENTS = f"{PREFIX}:agents"


def flow_version(name: str, digest: str) -> str:
    """One published version of flow `name`: its canonical JSON, under its content hash."""
    return f"{PREFIX}:flow:{name}:version:{digest}"


def flow_live(name: str) -> str:
    """The content hash of the version of flow `name` that new calls get."""
    return f"{PREFIX}:flow:{name}:live"


def flow_versions(name: str) -> str:
    """Every version of flow `name` ever published: hash -> epoch s of its first publish."""
    return f"{PREFIX}:flow:{name}:versions"


#: Operational counters derived from audit events (ivr.store.event_counts): field -> count.
EVENT_COUNTS = f"{PREFIX}:metrics:events"
