"""Rules for codes that prove possession. Pure: no Redis.

A code is made by `secrets`, and only its keyed digest is ever stored. The digest binds the code
to what it may be used for: a one-time code to this call, method, claimed account and the
destination it was sent to; a service code to its account. A code read off one call, or sent
for one account, is worthless in another call or for another claim (SECURITY 10, 28).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

CODE_PATTERN = re.compile(r"[0-9]{6,10}")


def make_code(digits: int) -> str:
    """A uniformly random string of digits (leading zeros kept)."""
    if not 6 <= digits <= 10:
        raise ValueError("codes have 6 to 10 digits")
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def digest(key: str, purpose: str, code: str) -> str:
    """HMAC-SHA256 of the code under the server key, bound to `purpose` (e.g. call and method)."""
    message = f"{purpose}\x1f{code}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def matches(key: str, purpose: str, code: str, stored_digest: str | None) -> bool:
    """Constant-time check; a malformed code still costs one HMAC."""
    candidate = digest(key, purpose, code if CODE_PATTERN.fullmatch(code or "") else "")
    return stored_digest is not None and hmac.compare_digest(candidate, stored_digest)


def otp_purpose(call_sid: str, method: str, claim: str, destination: str | None) -> str:
    """What a one-time code proves: possession of `destination`, for `claim`, in this call.

    A code sent to the caller's own address for their own account never matches once the call
    claims another account, nor once the address on file changed.
    """
    return "\x1f".join(("otp", call_sid, method, claim, destination or ""))


def service_purpose(account: str) -> str:
    return f"service:{account}"


@dataclass(frozen=True)
class IssuedCode:
    """What the store keeps of a code: never the code itself."""

    digest: str
    expires_at: float

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


# ITU-T E.164 country calling codes are prefix-free: 1 and 7 are one digit, these are two,
# and every other code has three. Enough to group sends by country for the SMS-pumping cap.
_TWO_DIGIT_CODES = frozenset(
    [
        "20",
        "27",
        "30",
        "31",
        "32",
        "33",
        "34",
        "36",
        "39",
        "40",
        "41",
        "43",
        "44",
        "45",
        "46",
        "47",
        "48",
        "49",
        "51",
        "52",
        "53",
        "54",
        "55",
        "56",
        "57",
        "58",
        "60",
        "61",
        "62",
        "63",
        "64",
        "65",
        "66",
        "81",
        "82",
        "84",
        "86",
        "90",
        "91",
        "92",
        "93",
        "94",
        "95",
        "98",
    ]
)


def country_prefix(e164: str) -> str:
    """`+44 20...` -> `44`; the key for the per-country send cap."""
    digits = e164.lstrip("+")
    if digits[:1] in ("1", "7"):
        return digits[:1]
    if digits[:2] in _TWO_DIGIT_CODES:
        return digits[:2]
    return digits[:3]
