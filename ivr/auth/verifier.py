"""Checks a knowledge secret for a call: the per-account lockout, the hash, the audit trail.

Every outcome that is not a match (unknown account, factor not set, factor locked, garbled
input, wrong secret) costs the same argon2 work and returns the same False, so a caller cannot
tell them apart.
"""

from __future__ import annotations

from ivr.assurance import factor_of
from ivr.auth.knowledge import SecretHasher
from ivr.flows.engine import CallState
from ivr.store.audit import AuditLog
from ivr.store.counters import FailureCounter
from ivr.store.customers import CustomerDirectory

KNOWLEDGE_METHODS = ("pin", "passcode")


class Verifier:
    def __init__(
        self,
        directory: CustomerDirectory,
        hasher: SecretHasher,
        counter: FailureCounter,
        audit: AuditLog,
        max_account_failures: int,
    ) -> None:
        self.directory = directory
        self.hasher = hasher
        self.counter = counter
        self.audit = audit
        self.max_account_failures = max_account_failures

    def account_for_caller(self, caller: str) -> str | None:
        accounts = self.directory.accounts_for_phone(caller)
        return accounts[0] if len(accounts) == 1 else None

    def verify(self, state: CallState, method: str, answer: str | None) -> bool:
        if method not in KNOWLEDGE_METHODS:
            raise ValueError(f"{method} is not a knowledge factor")
        customer = self.directory.get(state.account or "")
        stored = customer.secret_hash(method) if customer else None
        locked = (
            bool(customer)
            and self.counter.count(customer.account, method) >= self.max_account_failures
        )
        usable = answer is not None and not locked
        matched = self.hasher.verify(stored if usable else None, answer or "")
        outcome = "success" if matched else ("locked" if locked else "failure")
        if customer is not None:
            if matched:
                self.counter.reset(customer.account, method)
            elif (
                not locked
                and self.counter.add(customer.account, method) >= self.max_account_failures
            ):
                outcome = "failure_locked_now"
        self.audit.record(
            "authenticate",
            call_sid=state.call_sid,
            account=state.account or "",
            caller=state.caller,
            method=method,
            outcome=outcome if customer else "failure_unknown_account",
            detail=factor_of(method).value,
        )
        return matched
