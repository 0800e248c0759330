"""Risk signals: what the network says about a call and a number. Never a factor.

A signal proves nothing about the person: a STIR/SHAKEN attestation vouches for the calling
number, not for who holds the phone; a line type or a SIM change describes the number on file.
So no signal ever raises a call's assurance (`ivr.assurance.derive` never sees one); they only
route (a queue may ask more of an unattested call), refuse a channel (no SMS code to a landline
or to a SIM changed lately, NIST SP 800-63B rev 4 for PSTN verifiers), and travel to the
agent's task and the audit trail.

Everything here is pure: the web process parses `StirVerstat`, the worker judges a Lookup answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

Attestation = Literal["A", "B", "C", "failed", "absent"]
SimSwap = Literal["recent", "none", "unknown"]
UNKNOWN = "unknown"

#: `StirVerstat` as Twilio sends it (see twilio-facts.md): a verdict, a level for most, and any
#: number of path suffixes. Matched without regard to case or surrounding space.
_VERSTAT = re.compile(
    r"(?:(?P<tn>tn-validation-(?P<verdict>passed|failed)(?:-(?P<level>[abc]))?)|no-tn-validation)"
    r"(?P<suffixes>(?:-(?:diverted|passthrough))*)",
    re.IGNORECASE,
)
_SUFFIX = re.compile(r"-(diverted|passthrough)", re.IGNORECASE)
MAX_VERSTAT = 100


def attestation(stir_verstat: str | None) -> dict[str, str]:
    """`{"attestation": A|B|C|failed|absent}`, plus `attestation_path` (diverted, passthrough)
    when Twilio says the verdict came by a diverted or passed-through call.

    Tolerant: anything we do not recognise (a new value, a typo, garbage) is "absent", the same
    as no PASSporT at all, so an unknown value can never pass for an attested call.
    """
    found = _VERSTAT.fullmatch((stir_verstat or "")[:MAX_VERSTAT].strip())
    if found is None:
        return {"attestation": "absent"}
    level = found.group("level")
    if found.group("tn") is None:
        value = "absent"
    elif found.group("verdict").lower() == "failed":
        value = "failed"
    elif level is None:
        value = "absent"  # "passed" with no level is no value Twilio documents
    else:
        value = level.upper()
    signals = {"attestation": value}
    paths = _SUFFIX.findall(found.group("suffixes"))
    if paths:
        signals["attestation_path"] = paths[-1].lower()
    return signals


# -- Twilio Lookup v2 (line type intelligence, SIM swap) ------------------------------------

_LINE_TYPE = re.compile(r"[A-Za-z]{1,24}")
_DURATION = re.compile(r"P(?:(?P<d>[0-9]{1,5})D)?(?:T(?:(?P<h>[0-9]{1,6})H)?(?:(?P<m>[0-9]{1,8})M)?"
                       r"(?:(?P<s>[0-9]{1,10})S)?)?")  # fmt: skip


def line_type(payload: Mapping[str, object]) -> str:
    """The `line_type_intelligence.type` of a Lookup answer (mobile, landline, fixedVoip...),
    or "unknown" when Twilio gave none, gave an error, or gave something we cannot read."""
    package = payload.get("line_type_intelligence")
    if not isinstance(package, Mapping) or package.get("error_code") is not None:
        return UNKNOWN
    value = package.get("type")
    return value if isinstance(value, str) and _LINE_TYPE.fullmatch(value) else UNKNOWN


def sim_swap(payload: Mapping[str, object], window: int, now: float) -> SimSwap:
    """Whether the SIM behind the number changed within the last `window` seconds.

    Twilio answers with the date of the last change where the carrier gives it, else only
    whether a change happened within a period it chose (`swapped_period`, ISO 8601): "recent"
    or "none" only where the answer settles the question for our window, else "unknown".
    """
    package = payload.get("sim_swap")
    if not isinstance(package, Mapping) or package.get("error_code") is not None:
        return UNKNOWN
    last = package.get("last_sim_swap")
    if not isinstance(last, Mapping):
        return UNKNOWN
    when = _timestamp(last.get("last_sim_swap_date"))
    if when is not None:
        return "recent" if now - when < window else "none"
    period = _seconds(last.get("swapped_period"))
    swapped = last.get("swapped_in_period")
    if period is None or not isinstance(swapped, bool):
        return UNKNOWN
    if swapped and period <= window:
        return "recent"  # within Twilio's period, so within ours
    if not swapped and period >= window:
        return "none"  # not within Twilio's period, so not within ours
    return UNKNOWN


def sms_refusal(signals: Mapping[str, str]) -> str | None:
    """Why no SMS code may go to the number these signals describe, or None.

    A landline cannot receive it; a SIM changed lately may be in an attacker's hands (SIM
    swap), so a code sent there proves nothing. Unknown signals refuse nothing: a failed
    lookup never blocks a customer.
    """
    if signals.get("line_type") == "landline":
        return "landline"
    if signals.get("sim_swap") == "recent":
        return "recent SIM change"
    return None


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def _seconds(value: object) -> int | None:
    """An ISO 8601 duration of days, hours, minutes and seconds (`PT48H`, `P7D`) in seconds."""
    found = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if found is None or not any(found.groups()):
        return None
    d, h, m, s = (int(found.group(k) or 0) for k in "dhms")
    return ((d * 24 + h) * 60 + m) * 60 + s
