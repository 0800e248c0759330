"""The one place that decides how much a caller has proved.

A session's level is derived from the proofs gathered in this call, never stored as a flag, so
no code path can "set" a caller authenticated without a proof behind it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum, StrEnum


class Assurance(IntEnum):
    """Ordered, so a requirement is met by any level at or above it."""

    none = 0
    identified = 1
    one_factor = 2
    two_factor = 3

    @classmethod
    def parse(cls, name: str) -> Assurance:
        return cls[name]


class Factor(StrEnum):
    knowledge = "knowledge"
    possession = "possession"


METHOD_FACTORS: dict[str, Factor] = {
    "pin": Factor.knowledge,
    "passcode": Factor.knowledge,
    "sms_otp": Factor.possession,
    "email_otp": Factor.possession,
    "callback": Factor.possession,
    "service_code": Factor.possession,
}

METHODS = tuple(METHOD_FACTORS)


def factor_of(method: str) -> Factor:
    return METHOD_FACTORS[method]


def derive(identified: bool, proven_methods: Iterable[str]) -> Assurance:
    """Level from what was proved: a secret *and* a possession proof make two factors."""
    if not identified:
        return Assurance.none
    factors = {METHOD_FACTORS[m] for m in proven_methods}
    if len(factors) >= 2:
        return Assurance.two_factor
    if factors:
        return Assurance.one_factor
    return Assurance.identified
