"""RQ jobs: the slow, failure-prone work a webhook must not wait for.

Jobs are top-level functions whose arguments are opaque ids (call, method, nonce): the account,
destination and deadline of a send are read from its delivery record in Redis, because rq keeps
job arguments and logs job descriptions. A one-time code is made inside `send_code`, stored only
as a digest bound to the claim and destination, handed to the provider and forgotten.

A provider that fails for good marks the delivery failed at once (the caller is offered another
method); one that fails for now raises, and rq retries within the policy the web process set
when it queued the job, each retry held to the delivery's deadline.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from rq import get_current_job
from rq.job import Job

from ivr.auth import codes
from ivr.auth.possession import destination
from ivr.errors import SettingsError
from ivr.lookup import screen_sms
from ivr.settings import Settings, load_settings
from ivr.store.audit import AuditLog
from ivr.store.codes import VERIFY_MARK, CallbackRefs, CodeStore, DeliveryRecord
from ivr.store.customers import RedisCustomerDirectory
from ivr.store.send_caps import SendScopes, refund
from ivr.twilio_api import DeliveryError, PermanentDeliveryError, TwilioVerify, make_client
from workers.delivery import code_email, code_message, delivery_for

log = logging.getLogger(__name__)
CALLBACK_PATH = "/voice/callback"
CHANNELS = {"sms_otp": "sms", "email_otp": "email"}


def send_code(call_sid: str, method: str, nonce: str) -> None:
    """Make a one-time code for this call's send `nonce` and send it to the destination on file.

    Everything else (which account, by when) is read from the delivery record. The send goes
    out only while it is the call's current one, pending and within its deadline; once the
    caller has asked for a newer one, claimed another account, or been told it failed, this
    job changes nothing but to hand the send back.
    """
    job = _current_job()
    redis: Redis = job.connection
    settings = load_settings()
    store, audit, ttl = CodeStore(redis), AuditLog(redis), settings.code_ttl
    send = _take(redis, store, audit, call_sid, method, nonce, ttl)
    if send is None:
        return
    account, to = send.claim, _destination(redis, send.claim, method)
    try:
        if to is None:
            # Unknown account, or no email on file: the caller hears exactly what a customer
            # hears, and no code will ever match. Superseded, it is handed back as a customer's.
            made = store.settle(call_sid, method, nonce, ttl, status="sent")
            if made:
                audit.record(
                    "delivery",
                    call_sid=call_sid,
                    account=account,
                    method=method,
                    outcome="not_sent",
                )
        else:
            refusal = (
                screen_sms(redis, settings, call_sid, account, to) if method == "sms_otp" else None
            )
            if refusal is not None:
                # A landline or a SIM changed lately: no code goes there, and the caller hears
                # the step's unavailable prompt (ivr.lookup).
                raise PermanentDeliveryError(f"no SMS code to this number: {refusal}")
            made = _deliver(settings, store, call_sid, method, account, to, nonce)
            if made and store.settle(call_sid, method, nonce, ttl, status="sent"):
                audit.record(
                    "delivery", call_sid=call_sid, account=account, method=method, outcome="sent"
                )
    except (DeliveryError, SettingsError) as exc:
        permanent = isinstance(exc, PermanentDeliveryError | SettingsError)
        if permanent or not job.retries_left:
            _failed(store, audit, settings, call_sid, method, account, nonce, exc)
            _refund(redis, call_sid, account, method, to)
        else:
            log.warning("delivery for call %s (%s) failed for now: %s", call_sid, method, exc)
        if not permanent:
            raise  # rq retries it, or records it failed
        return
    if not made:
        _refund(redis, call_sid, account, method, to)  # superseded: the newer one counts


def _deliver(
    settings: Settings,
    store: CodeStore,
    call_sid: str,
    method: str,
    account: str,
    to: str,
    nonce: str,
) -> bool:
    """Send one code; False when the send is no longer wanted (then nothing is sent)."""
    channel = CHANNELS[method]
    backend = settings.sms_backend if channel == "sms" else settings.email_backend
    ttl = settings.code_ttl
    if backend == "verify":
        if store.pending(call_sid, method, nonce, time.time()) is None:
            return False
        TwilioVerify(make_client(settings), settings.verify_service_sid or "").start(to, channel)
        # Abandoned meanwhile: no mark, so whatever Twilio sent matches nothing; but it was sent,
        # and so it counts against the caps.
        store.settle(call_sid, method, nonce, ttl, issue=VERIFY_MARK, now=time.time())
        return True
    if not settings.code_key:
        raise PermanentDeliveryError("IVR_CODE_KEY is not set; no code can be made")
    code = codes.make_code(settings.code_digits)
    made = time.time()
    purpose = codes.otp_purpose(call_sid, method, account, to)
    issued = codes.IssuedCode(codes.digest(settings.code_key, purpose, code), made + ttl)
    if not store.settle(call_sid, method, nonce, ttl, issue=issued, now=made):
        return False
    delivery = delivery_for(settings, channel)  # type: ignore[arg-type]
    if channel == "sms":
        delivery.send_sms(to, code_message(settings.brand, code, ttl // 60))
    else:
        subject, body = code_email(settings.brand, code, ttl // 60)
        delivery.send_email(to, subject, body)
    return True


def place_callback(call_sid: str, nonce: str) -> None:
    """Call the number on file; the call back carries this call's claim by its own CallSid.

    What it carries (the claim, the proofs so far, the step) comes from the delivery record,
    so the job's arguments hold neither the account nor the caller's phone number.
    """
    job = _current_job()
    redis: Redis = job.connection
    settings = load_settings()
    store, audit = CodeStore(redis), AuditLog(redis)
    send = _take(redis, store, audit, call_sid, "callback", nonce, settings.code_ttl)
    if send is None or send.callback is None:
        return
    account = send.claim
    to = _destination(redis, account, "callback")
    if to is None:
        return  # unknown account: the caller was told to hang up, and nobody is called
    base = settings.public_url or ""
    try:
        callback_sid = delivery_for(settings, "call").place_call(to, base + CALLBACK_PATH)
    except (DeliveryError, SettingsError) as exc:
        permanent = isinstance(exc, PermanentDeliveryError | SettingsError)
        if permanent or not job.retries_left:
            _failed(store, audit, settings, call_sid, "callback", account, nonce, exc)
            _refund(redis, call_sid, account, "callback", to)
        if not permanent:
            raise
        return
    CallbackRefs(redis).put(callback_sid, send.callback)
    store.settle(call_sid, "callback", nonce, settings.code_ttl, status="sent")
    audit.record(
        "delivery",
        call_sid=call_sid,
        account=account,
        method="callback",
        outcome="sent",
        detail=callback_sid,
    )


def _current_job() -> Job:
    job = get_current_job()
    assert job is not None, "jobs run inside an rq worker"
    return job


def _destination(redis: Redis, account: str, method: str) -> str | None:
    return destination(RedisCustomerDirectory(redis).get(account), method)


def _take(
    redis: Redis,
    store: CodeStore,
    audit: AuditLog,
    call_sid: str,
    method: str,
    nonce: str,
    ttl: int,
) -> DeliveryRecord | None:
    """The send `nonce`, if it is still to be made; else None, and a send that was counted and
    will never be made is handed back (SECURITY 30): superseded by a newer one, abandoned, or
    past its deadline (then it is failed, so it never goes out late, SECURITY 26)."""
    record = store.delivery_record(call_sid, method)
    if record is None:
        return None  # expired with the code's lifetime: nothing to send, nothing left to hand back
    if record.nonce != nonce:
        claim = store.claim_of(call_sid, method, nonce)
        if claim is not None:
            _refund(redis, call_sid, claim, method, _destination(redis, claim, method))
        return None
    if record.status == "pending" and not record.open(time.time()):
        store.settle(call_sid, method, nonce, ttl, status="failed", void=True)
        audit.record(
            "delivery", call_sid=call_sid, account=record.claim, method=method, outcome="expired"
        )
    elif record.status == "pending":
        return record
    elif record.status != "abandoned":
        return None  # settled by an earlier run
    _refund(redis, call_sid, record.claim, method, _destination(redis, record.claim, method))
    return None


def _failed(
    store: CodeStore,
    audit: AuditLog,
    settings: Settings,
    call_sid: str,
    method: str,
    account: str,
    nonce: str,
    exc: DeliveryError | SettingsError,
) -> None:
    """The provider failed the send for good: it is failed, and a code nobody received no
    longer works (a newer send's code is left alone)."""
    if store.settle(call_sid, method, nonce, settings.code_ttl, status="failed", void=True):
        audit.record(
            "delivery",
            call_sid=call_sid,
            account=account,
            method=method,
            outcome="failed",
            detail=str(exc)[:200],
        )


def _refund(redis: Redis, call_sid: str, account: str, method: str, to: str | None) -> None:
    """Hand back a send the web process counted and this job did not make (SECURITY 30).

    A send to nobody (no destination on file) that the caller is told went out stays counted,
    as a customer's would: see `ivr.store.send_caps`."""
    refund(redis, SendScopes.of(call_sid, account, method, to))
