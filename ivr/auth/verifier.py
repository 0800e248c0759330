"""Checks one authentication attempt for a call: lockout, the factor itself, the audit trail.

Every outcome that is not a match (unknown account, factor not set, factor locked, garbled
input, wrong secret or code) returns the same False, and the knowledge factors cost the same
argon2 work either way, so a caller cannot tell them apart. Each of them also counts against the
calling number's abuse limits; a number over them is refused before anything is checked.

It also turns what a caller keys at `identify` into the call's claim id: the account number
when it is on file, else a keyed digest (`ivr.auth.claims.unmatched_claim`) under the server's
claim key, so the digits of a non-match rest nowhere (call state, audit, send caps, jobs).
"""

from __future__ import annotations

from ivr.assurance import factor_of
from ivr.auth import claims
from ivr.auth.knowledge import SecretHasher
from ivr.auth.possession import Possession
from ivr.flows import trail
from ivr.flows.engine import (
    CALLBACK_CONFIRM,
    AuthenticationRefused,
    CallState,
    Delivery,
    DeliveryStatus,
    FactorUnavailable,
)
from ivr.flows.schema import CODE_METHODS
from ivr.store.abuse import AbuseGuard
from ivr.store.audit import AuditLog
from ivr.store.counters import FailureCounter
from ivr.store.customers import Customer, CustomerDirectory

KNOWLEDGE_METHODS = ("pin", "passcode")


class Verifier:
    """The engine's `Ports`: the one place an attempt is judged, counted and audited."""

    def __init__(
        self,
        directory: CustomerDirectory,
        hasher: SecretHasher,
        counter: FailureCounter,
        audit: AuditLog,
        max_account_failures: int,
        possession: Possession,
        abuse: AbuseGuard,
        claim_key: str | None = None,
    ) -> None:
        self.directory = directory
        self.hasher = hasher
        self.counter = counter
        self.audit = audit
        self.max_account_failures = max_account_failures
        self.possession = possession
        self.abuse = abuse
        self.claim_key = claim_key  # see ivr.runtime.claim_key; None refuses every typed claim

    def account_for_caller(self, caller: str) -> str | None:
        accounts = self.directory.accounts_for_phone(caller)
        return accounts[0] if len(accounts) == 1 else None

    def claim(self, digits: str) -> str:
        if self.claim_key is None:
            # Fail closed (the caller gets the apology) rather than keep the digits in clear.
            raise RuntimeError(
                "no key for claim digests: set IVR_CODE_KEY (or IVR_PEPPER, TWILIO_AUTH_TOKEN)"
            )
        unmatched = claims.unmatched_claim(self.claim_key, digits)  # always: same work either way
        customer = self.directory.get(digits)
        return customer.account if customer is not None else unmatched

    def drop_claim(self, state: CallState) -> None:
        self.possession.drop_claim(state)
        self.audit.record(
            "claim_dropped",
            call_sid=state.call_sid,
            account=state.account,
            caller=state.caller,
            detail=",".join(state.proofs) or None,
        )

    def note(self, state: CallState, event: str, **fields: str) -> None:
        if event == trail.IDENTIFY:
            fields["outcome"] = _claim_outcome(state.account)
        self.audit.of_call(event, state, **fields)

    def request_code(self, state: CallState, method: str, max_wait: int) -> Delivery:
        return self.possession.request_code(state, method, max_wait)

    def delivery_status(self, state: CallState, method: str) -> DeliveryStatus:
        return self.possession.delivery_status(state, method)

    def abandon_delivery(self, state: CallState, method: str) -> None:
        self.possession.abandon_delivery(state, method)

    def request_callback(self, state: CallState, step: str) -> Delivery:
        return self.possession.request_callback(state, step)

    def verify(self, state: CallState, method: str, answer: str | None) -> bool:
        admission = self.abuse.admit(state)
        if admission is None:
            # Refused before anything is looked up, hashed or counted.
            self.audit.attempt("authenticate", state, method, "refused", factor_of(method).value)
            raise AuthenticationRefused
        customer = self.directory.get(state.account or "")
        # The attempt is counted before it is checked: INCR is atomic, so parallel calls cannot
        # all pass a read-then-write check and get more guesses than the cap allows.
        attempt = self.counter.add(customer.account, method) if customer else 0
        locked = attempt > self.max_account_failures
        if locked and customer is not None:
            self.counter.undo(
                customer.account, method
            )  # refused unchecked: the count stays at the cap
        try:
            matched = self._matches(state, method, customer, None if locked else answer)
        except FactorUnavailable:
            if customer is not None:
                self.counter.undo(customer.account, method)  # the provider failed, not the caller
            self.abuse.release(admission)
            self.audit.attempt(
                "authenticate", state, method, "unavailable", factor_of(method).value
            )
            raise
        if matched and customer is not None:
            self.counter.reset(customer.account, method)
        if customer is None:
            outcome = "failure_unknown_account"
        elif matched:
            outcome = "success"
        elif locked:
            outcome = "locked"
        else:
            at_cap = attempt == self.max_account_failures
            outcome = "failure_locked_now" if at_cap else "failure"
        self.audit.attempt("authenticate", state, method, outcome, factor_of(method).value)
        if outcome == "failure_locked_now":
            self.audit.attempt("lockout", state, method, "locked", f"after {attempt} failures")
        self.abuse.settle(admission, state, not matched, customer.account if customer else None)
        return matched

    def _matches(
        self, state: CallState, method: str, customer: Customer | None, answer: str | None
    ) -> bool:
        if method in KNOWLEDGE_METHODS:
            stored = customer.secret_hash(method) if customer else None
            return self.hasher.verify(stored if answer is not None else None, answer or "")
        if method in CODE_METHODS:
            return self.possession.check_code(state, method, customer, answer)
        if method == "service_code":
            return customer is not None and self.possession.check_service_code(
                customer.account, answer
            )
        if method == "callback":
            # Only a call the worker placed to this account's number on file carries its account.
            called_back = state.called_back is not None and state.called_back == state.account
            return called_back and answer == CALLBACK_CONFIRM
        raise ValueError(f"unknown method {method}")


def _claim_outcome(claim: str | None) -> str:
    """`matched` for a claim id that is an account number; `unmatched` for the digest of digits
    that match none, or a caller ID on no account's file (the claim id is "")."""
    if not claim or claim.startswith(claims.UNMATCHED_PREFIX):
        return "unmatched"
    return "matched"
