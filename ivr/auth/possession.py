"""Possession factors: one-time codes by SMS or email, the callback, and service codes.

The web process never sees a one-time code: it asks the worker (by job name, so `ivr` does not
import `workers`) to make and deliver one, and later checks what the caller keys in against the
stored digest. Every send is capped before it is queued.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError

from ivr.auth import codes
from ivr.flows.engine import CallState, Delivery, DeliveryStatus, FactorUnavailable
from ivr.processes import QUEUE
from ivr.store.audit import AuditLog
from ivr.store.codes import VERIFY_MARK, CodeStore
from ivr.store.customers import Customer, CustomerDirectory
from ivr.store.send_caps import SendLimiter, SendScopes
from ivr.twilio_api import DeliveryError, TwilioVerify

SEND_CODE_JOB = "workers.jobs.send_code"
VERIFY_CODE = re.compile(r"[0-9]{4,10}")  # what Twilio Verify can have sent
PLACE_CALLBACK_JOB = "workers.jobs.place_callback"
# A job not started within the longest hold (max_wait <= 30 s) is dropped: by then the caller
# has been told the code could not be sent, and a late text would only confuse them.
JOB_TTL = 30
JOB_TIMEOUT = 30
JOB_RETRY = Retry(max=2, interval=[2, 5])


@dataclass(frozen=True)
class CodePolicy:
    key: str | None
    digits: int
    ttl: int
    service_digits: int
    service_ttl: int


def destination(customer: Customer | None, method: str) -> str | None:
    """Only ever the number or address on file: never the number that called."""
    if customer is None:
        return None
    return customer.email if method == "email_otp" else customer.phone


class Possession:
    def __init__(
        self,
        redis: Redis,
        directory: CustomerDirectory,
        policy: CodePolicy,
        limiter: SendLimiter,
        audit: AuditLog,
        verify: dict[str, TwilioVerify] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.directory = directory
        self.policy = policy
        self.codes = CodeStore(redis)
        self.limiter = limiter
        self.audit = audit
        self.verify = verify or {}  # method -> Twilio Verify, where Twilio makes the code
        self.clock = clock
        self.queue = Queue(QUEUE, connection=redis)

    def request_code(self, state: CallState, method: str) -> Delivery:
        account = state.account or ""
        customer = self.directory.get(account)
        to = destination(customer, method)
        if not self._allowed(state, method, to):
            return "unavailable"
        nonce = str(state.seq)  # one per answered request of the call
        self.codes.open_delivery(state.call_sid, method, nonce, self.policy.ttl)
        self._enqueue(
            SEND_CODE_JOB,
            f"code-{state.call_sid}-{method}-{nonce}",
            state.call_sid,
            method,
            account,
            nonce,
        )
        self.audit.attempt("delivery", state, method, "send_requested")
        return "queued"

    def delivery_status(self, state: CallState, method: str) -> DeliveryStatus:
        return self.codes.delivery(state.call_sid, method) or "failed"

    def request_callback(self, state: CallState, step: str) -> Delivery:
        account = state.account or ""
        to = destination(self.directory.get(account), "callback")
        if not self._allowed(state, "callback", to):
            return "unavailable"
        self._enqueue(
            PLACE_CALLBACK_JOB,
            f"callback-{state.call_sid}-{state.seq}",
            state.call_sid,
            account,
            state.caller,
            list(state.proofs),
            state.failures,
            step,
        )
        self.audit.attempt("delivery", state, "callback", "send_requested")
        return "queued"

    def check_code(
        self, state: CallState, method: str, customer: Customer | None, answer: str | None
    ) -> bool:
        """The code of this call and method, unexpired, used once."""
        issued = self.codes.otp(state.call_sid, method)
        if issued == VERIFY_MARK:
            to = destination(customer, method)
            if method not in self.verify:
                return False  # the backend changed since the code was sent: fail closed
            if not VERIFY_CODE.fullmatch(answer or ""):
                return False  # not a code at all: the caller's failure, not Twilio's
            try:
                ok = bool(answer and to and self.verify[method].check(to, answer))
            except DeliveryError as exc:
                # Fail closed without blaming the caller: another method is offered instead.
                raise FactorUnavailable(str(exc)) from None
        else:
            ok = (
                self.policy.key is not None
                and isinstance(issued, codes.IssuedCode)
                and not issued.expired(self.clock())
                and codes.matches(
                    self.policy.key,
                    codes.otp_purpose(state.call_sid, method),
                    answer or "",
                    issued.digest,
                )
            )
        return ok and self.codes.consume_otp(state.call_sid, method)

    def issue_service_code(self, account: str) -> str:
        """A new service code for a signed-in web customer; it replaces the previous one."""
        if self.policy.key is None:
            raise RuntimeError("IVR_CODE_KEY is not set")
        code = codes.make_code(self.policy.service_digits)
        digest = codes.digest(self.policy.key, codes.service_purpose(account), code)
        issued = codes.IssuedCode(digest, self.clock() + self.policy.service_ttl)
        self.codes.issue_service_code(account, issued, self.policy.service_ttl)
        self.audit.record("service_code_issued", account=account, method="service_code")
        return code

    def check_service_code(self, account: str, answer: str | None) -> bool:
        issued = self.codes.service_code(account)
        ok = (
            self.policy.key is not None
            and issued is not None
            and not issued.expired(self.clock())
            and codes.matches(
                self.policy.key, codes.service_purpose(account), answer or "", issued.digest
            )
        )
        return ok and self.codes.consume_service_code(account)

    def _allowed(self, state: CallState, method: str, to: str | None) -> bool:
        """Counts the send when every cap has room; audits which cap refused it, if one did.

        The worker refunds a send it does not make: see `SendScopes.of` for what it needs."""
        decision = self.limiter.allow(SendScopes.of(state.call_sid, state.account, method, to))
        if decision.capped:
            self.audit.attempt("delivery", state, method, "send_capped", detail=decision.capped)
        return decision.allowed

    def _enqueue(self, job: str, job_id: str, *args: object) -> None:
        # the same request again (a retried webhook) finds its job there: one job, one message
        with contextlib.suppress(DuplicateJobError):
            self.queue.enqueue_call(
                job,
                args=args,
                job_id=job_id,
                unique=True,
                ttl=JOB_TTL,
                timeout=JOB_TIMEOUT,
                retry=JOB_RETRY,
                result_ttl=0,
                failure_ttl=24 * 3600,
            )
