"""Possession factors: one-time codes by SMS or email, the callback, and service codes.

The web process never sees a one-time code: it asks the worker (by job name, so `ivr` does not
import `workers`) to make and deliver one, and later checks what the caller keys in against the
stored digest. Every send is capped before it is queued.

Each send is a delivery record in Redis (`CodeStore.open_delivery`) holding the claim it was
asked for and its deadline; the job gets only opaque ids and reads the rest from there. The
code the job makes is bound to that claim and its destination, so it proves nothing for any
other account claimed later in the call; and a send the caller was told had failed is abandoned
(`abandon`), after which it can neither deliver nor issue a code.

Each send has a deadline, checked by its job in the transaction that issues the code: a code's,
the request time plus the step's `max_wait` (the caller's hold); a call back's, `CALLBACK_WITHIN`.
rq drops a job not started within `JOB_TTL`, which outlasts every deadline, so the deadline alone
decides whether a send goes out, and a late job still runs to hand its send back.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError

from ivr.auth import codes
from ivr.flows.engine import CallState, Delivery, DeliveryStatus, FactorUnavailable
from ivr.flows.schema import DELIVERED_METHODS, MAX_WAIT
from ivr.processes import QUEUE
from ivr.store.abuse import AbuseGuard
from ivr.store.audit import AuditLog
from ivr.store.codes import VERIFY_MARK, CallbackRef, CodeStore
from ivr.store.customers import Customer, CustomerDirectory
from ivr.store.send_caps import SendLimiter, SendScopes
from ivr.twilio_api import HTTP_TIMEOUT, DeliveryError, TwilioVerify
from ivr.worker import OUTAGE_BUDGET

SEND_CODE_JOB = "workers.jobs.send_code"
VERIFY_CODE = re.compile(r"[0-9]{4,10}")  # what Twilio Verify can have sent
PLACE_CALLBACK_JOB = "workers.jobs.place_callback"
# A call back not placed within a minute of the request is not placed: the customer hung up
# expecting it "in a moment", and a call much later would only confuse them.
CALLBACK_WITHIN = 60
# One run of a job: a Redis outage the worker rides out, then one exchange with the provider
# (Twilio's HTTP, or SMTP's connect, login and send, each bounded by HTTP_TIMEOUT's 10 s).
JOB_TIMEOUT = math.ceil(OUTAGE_BUDGET + 3 * HTTP_TIMEOUT)
# Past every deadline by an outage the worker rides out: a job held up by one still starts,
# finds its deadline passed and hands its send back; the TTL only clears a queue nobody works.
JOB_TTL = max(MAX_WAIT, CALLBACK_WITHIN) + math.ceil(OUTAGE_BUDGET)
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
        abuse: AbuseGuard,
        verify: dict[str, TwilioVerify] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.directory = directory
        self.policy = policy
        self.codes = CodeStore(redis)
        self.limiter = limiter
        self.audit = audit
        self.abuse = abuse
        self.verify = verify or {}  # method -> Twilio Verify, where Twilio makes the code
        self.clock = clock
        self.queue = Queue(QUEUE, connection=redis)

    def request_code(self, state: CallState, method: str, max_wait: int = MAX_WAIT) -> Delivery:
        """Queue a send for the claim as it is now; the caller holds at most `max_wait` s for
        it, and the job refuses to send from then on (callers that do not say, such as tools,
        get the longest hold a flow may declare)."""
        account = state.account or ""
        customer = self.directory.get(account)
        to = destination(customer, method)
        if self._backed_up(state, method, max_wait) or not self._allowed(state, method, to):
            return "unavailable"
        nonce = str(state.seq)  # one per answered request of the call
        self.codes.open_delivery(
            state.call_sid,
            method,
            nonce,
            claim=account,
            deadline=self.clock() + max_wait,
            ttl=self.policy.ttl,
        )
        job_id = f"code-{state.call_sid}-{method}-{nonce}"
        self._enqueue(SEND_CODE_JOB, job_id, state.call_sid, method, nonce)
        self.audit.attempt("delivery", state, method, "send_requested")
        return "queued"

    def delivery_status(self, state: CallState, method: str) -> DeliveryStatus:
        status = self.codes.delivery(state.call_sid, method)
        return status if status in ("pending", "sent") else "failed"  # type: ignore[return-value]

    def abandon_delivery(self, state: CallState, method: str) -> None:
        """The caller was told `method` could not be delivered: that send never counts."""
        self.codes.abandon(state.call_sid, method)
        self.audit.attempt("delivery", state, method, "abandoned")

    def drop_claim(self, state: CallState) -> None:
        """The call claims another account: every send and code of the old claim is void."""
        self.codes.abandon(state.call_sid, *DELIVERED_METHODS)

    def request_callback(self, state: CallState, step: str) -> Delivery:
        account = state.account or ""
        to = destination(self.directory.get(account), "callback")
        if self._backed_up(state, "callback", CALLBACK_WITHIN) or not self._allowed(
            state, "callback", to
        ):
            return "unavailable"
        nonce = str(state.seq)
        ref = CallbackRef(
            state.call_sid,
            state.caller,
            account,
            list(state.proofs),
            state.failures,
            step,
            dict(state.proven_at),
            state.flow_version,
        )
        self.codes.open_delivery(
            state.call_sid,
            "callback",
            nonce,
            claim=account,
            deadline=self.clock() + CALLBACK_WITHIN,
            ttl=self.policy.ttl,
            callback=ref,
        )
        job_id = f"callback-{state.call_sid}-{nonce}"
        self._enqueue(PLACE_CALLBACK_JOB, job_id, state.call_sid, nonce)
        self.audit.attempt("delivery", state, "callback", "send_requested")
        return "queued"

    def check_code(
        self, state: CallState, method: str, customer: Customer | None, answer: str | None
    ) -> bool:
        """The code of this call and method, made for this claim and its destination on file,
        unexpired, used once.

        No code, no customer, no destination on file: all fail exactly like a wrong code, after
        the same one HMAC, so the check tells nothing about the claimed account.
        """
        issued = self.codes.otp(state.call_sid, method)
        to = destination(customer, method)
        if issued == VERIFY_MARK:
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
            stored = issued if isinstance(issued, codes.IssuedCode) else None
            purpose = codes.otp_purpose(state.call_sid, method, state.account or "", to)
            # `matches` runs first and always: one HMAC whatever is (or is not) on file.
            matched = codes.matches(
                self.policy.key or "", purpose, answer or "", stored.digest if stored else None
            )
            ok = (
                matched
                and self.policy.key is not None
                and stored is not None
                and not stored.expired(self.clock())
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
        """The one gate of every send: refused for a calling number in its abuse cool-down,
        else counted when every cap has room; a refusal is audited as `send_capped` with its
        reason (`abuse`, or the cap that refused it).

        The worker refunds a send it does not make: see `SendScopes.of` for what it needs."""
        if self.abuse.refused(state):
            self.audit.attempt("delivery", state, method, "send_capped", detail="abuse")
            return False
        decision = self.limiter.allow(SendScopes.of(state.call_sid, state.account, method, to))
        if decision.capped:
            self.audit.attempt("delivery", state, method, "send_capped", detail=decision.capped)
        return decision.allowed

    def _backed_up(self, state: CallState, method: str, within: float) -> bool:
        """The oldest send still queued has waited `within` s already: the workers are that far
        behind, so a send queued now would not go out in time (they work oldest first). The
        caller hears at once that it cannot be sent, rather than after holding for nothing, and
        the send is not counted; audited as `send_backlogged`."""
        head = self.queue.get_job_ids(0, 1)
        job = self.queue.fetch_job(head[0]) if head else None
        if job is None or job.enqueued_at is None:
            return False
        if self.clock() - job.enqueued_at.timestamp() < within:
            return False
        self.audit.attempt("delivery", state, method, "send_backlogged")
        return True

    def _enqueue(self, job: str, job_id: str, *args: object) -> None:
        # the same request again (a retried webhook) finds its job there: one job, one message
        with contextlib.suppress(DuplicateJobError):
            self.queue.enqueue_call(
                job,
                args=args,
                job_id=job_id,
                description=job_id,  # rq logs the description: ids only, never arguments
                unique=True,
                ttl=JOB_TTL,
                timeout=JOB_TIMEOUT,
                retry=JOB_RETRY,
                result_ttl=0,
                failure_ttl=24 * 3600,
            )
