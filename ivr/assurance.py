"""The one place that decides how much a caller has proved.

A session's level is derived from the proofs gathered in this call, never stored as a flag, so
no code path can "set" a caller authenticated without a proof behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


# STIR/SHAKEN attestations that passed verification; absent, failed or unknown is unattested.
ATTESTED = frozenset({"A", "B", "C"})


def attested(signals: Mapping[str, str]) -> bool:
    """Caller ID attestation is a risk signal, never a factor: it can only raise a requirement."""
    return signals.get("attestation") in ATTESTED


def level_for(
    identified: bool, proofs: Iterable[str], allowed_methods: Iterable[str] | None = None
) -> Assurance:
    """Level from the proofs that count: a queue may refuse some methods (NIST SP 800-63B rev 4
    says an email code is no out-of-band authenticator), and those proofs then add nothing."""
    if allowed_methods is None:
        return derive(identified, proofs)
    allowed = frozenset(allowed_methods)
    return derive(identified, [m for m in proofs if m in allowed])


@dataclass(frozen=True)
class Requirement:
    """What one queue asks of a caller; the engine and the flow checker both decide by it."""

    level: Assurance
    methods: frozenset[str] = frozenset(METHODS)
    unattested: Assurance | None = None

    def needed(self, is_attested: bool) -> Assurance:
        if is_attested or self.unattested is None:
            return self.level
        return max(self.level, self.unattested)

    @property
    def strictest(self) -> Assurance:
        """What a caller without attestation needs; any caller may be one, so a flow's paths
        are proved against this."""
        return self.needed(False)

    def level_of(self, identified: bool, proofs: Iterable[str]) -> Assurance:
        return level_for(identified, proofs, self.methods)

    def met(self, identified: bool, proofs: Iterable[str], is_attested: bool) -> bool:
        return self.level_of(identified, proofs) >= self.needed(is_attested)
