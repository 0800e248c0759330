"""RQ jobs: the slow, failure-prone work a webhook must not wait for.

Jobs are top-level functions whose arguments hold no secret: a one-time code is made inside
`send_code`, stored only as a digest, handed to the provider and forgotten. A provider that
fails for good marks the delivery failed at once (the caller is offered another method); one that
fails for now raises, and rq retries within the policy the web process set when it queued the job.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from rq import get_current_job

from ivr.auth import codes
from ivr.auth.possession import destination
from ivr.errors import SettingsError
from ivr.settings import Settings, load_settings
from ivr.store.audit import AuditLog
from ivr.store.codes import VERIFY_MARK, CallbackRef, CallbackRefs, CodeStore
from ivr.store.customers import RedisCustomerDirectory
from ivr.store.send_caps import SendLimiter, SendLimits, SendScopes
from ivr.twilio_api import DeliveryError, PermanentDeliveryError, TwilioVerify, make_client
from workers.delivery import code_email, code_message, delivery_for

log = logging.getLogger(__name__)
CALLBACK_PATH = "/voice/callback"
CHANNELS = {"sms_otp": "sms", "email_otp": "email"}


def send_code(call_sid: str, method: str, account: str, nonce: str) -> None:
    """Make a one-time code for this call and method and send it to the destination on file.

    `nonce` names the send; once the caller has asked for a newer one, this job changes nothing.
    """
    job = get_current_job()
    assert job is not None, "send_code runs inside an rq worker"
    redis: Redis = job.connection
    settings = load_settings()
    store = CodeStore(redis)
    audit = AuditLog(redis)
    ttl = settings.code_ttl
    to = destination(RedisCustomerDirectory(redis).get(account), method)
    if to is None:
        # Unknown account, or no email on file: the caller hears exactly what a customer hears,
        # and no code will ever match.
        if not store.settle(call_sid, method, nonce, ttl, status="sent"):
            _refund(redis, settings, call_sid, account, method, to)  # superseded, as a customer's
        return
    if job.enqueued_at is not None and _age(job.enqueued_at) >= ttl:
        store.settle(call_sid, method, nonce, ttl, status="failed", void=True)  # never stale
        _refund(redis, settings, call_sid, account, method, to)
        return
    try:
        sent = _deliver(settings, store, call_sid, method, to, nonce)
    except (PermanentDeliveryError, SettingsError) as exc:
        _failed(store, audit, settings, call_sid, method, account, nonce, exc)
        _refund(redis, settings, call_sid, account, method, to)
        return
    except DeliveryError as exc:
        if job.retries_left:
            log.warning("delivery for call %s (%s) failed for now: %s", call_sid, method, exc)
            raise
        _failed(store, audit, settings, call_sid, method, account, nonce, exc)
        _refund(redis, settings, call_sid, account, method, to)
        raise
    if not sent:
        _refund(redis, settings, call_sid, account, method, to)  # superseded: the newer one counts
    elif store.settle(call_sid, method, nonce, ttl, status="sent"):
        audit.record("delivery", call_sid=call_sid, account=account, method=method, outcome="sent")


def _deliver(
    settings: Settings, store: CodeStore, call_sid: str, method: str, to: str, nonce: str
) -> bool:
    """Send one code; False when a newer send has taken over (then nothing is sent)."""
    channel = CHANNELS[method]
    backend = settings.sms_backend if channel == "sms" else settings.email_backend
    ttl = settings.code_ttl
    if backend == "verify":
        if not store.is_current(call_sid, method, nonce):
            return False
        TwilioVerify(make_client(settings), settings.verify_service_sid or "").start(to, channel)
        store.settle(call_sid, method, nonce, ttl, issue=VERIFY_MARK)
        return True  # sent, even if a newer send took over meanwhile
    if not settings.code_key:
        raise PermanentDeliveryError("IVR_CODE_KEY is not set; no code can be made")
    code = codes.make_code(settings.code_digits)
    issued = codes.IssuedCode(
        codes.digest(settings.code_key, codes.otp_purpose(call_sid, method), code),
        time.time() + ttl,
    )
    if not store.settle(call_sid, method, nonce, ttl, issue=issued):
        return False
    delivery = delivery_for(settings, channel)  # type: ignore[arg-type]
    if channel == "sms":
        delivery.send_sms(to, code_message(settings.brand, code, ttl // 60))
    else:
        subject, body = code_email(settings.brand, code, ttl // 60)
        delivery.send_email(to, subject, body)
    return True


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
    # A code nobody received must not stay valid; a newer send's code is left alone.
    if store.settle(call_sid, method, nonce, settings.code_ttl, status="failed", void=True):
        audit.record(
            "delivery",
            call_sid=call_sid,
            account=account,
            method=method,
            outcome="failed",
            detail=str(exc)[:200],
        )


def place_callback(
    call_sid: str,
    account: str,
    caller: str,
    proofs: list[str],
    failures: int,
    step: str,
) -> None:
    """Call the number on file; the call back carries this call's claim by its own CallSid."""
    job = get_current_job()
    assert job is not None, "place_callback runs inside an rq worker"
    redis: Redis = job.connection
    settings = load_settings()
    audit = AuditLog(redis)
    to = destination(RedisCustomerDirectory(redis).get(account), "callback")
    if to is None:
        return  # unknown account: the caller was told to hang up, and nobody is called
    base = settings.public_url or ""
    try:
        callback_sid = delivery_for(settings, "call").place_call(to, base + CALLBACK_PATH)
    except (PermanentDeliveryError, SettingsError) as exc:
        _callback_failed(audit, call_sid, account, exc)
        _refund(redis, settings, call_sid, account, "callback", to)
        return
    except DeliveryError as exc:
        if not job.retries_left:
            _callback_failed(audit, call_sid, account, exc)
            _refund(redis, settings, call_sid, account, "callback", to)
        raise
    ref = CallbackRef(call_sid, caller, account, proofs, failures, step)
    CallbackRefs(redis).put(callback_sid, ref)
    audit.record(
        "delivery",
        call_sid=call_sid,
        account=account,
        method="callback",
        outcome="sent",
        detail=callback_sid,
    )


def _callback_failed(
    audit: AuditLog, call_sid: str, account: str, exc: DeliveryError | SettingsError
) -> None:
    audit.record(
        "delivery",
        call_sid=call_sid,
        account=account,
        method="callback",
        outcome="failed",
        detail=str(exc)[:200],
    )


def _refund(
    redis: Redis, settings: Settings, call_sid: str, account: str, method: str, to: str | None
) -> None:
    """Hand back a send the web process counted and this job did not make (SECURITY 30).

    A send to nobody (no destination on file) that the caller is told went out stays counted,
    as a customer's would: see `ivr.store.send_caps`."""
    scopes = SendScopes.of(call_sid, account, method, to)
    SendLimiter(redis, SendLimits.from_settings(settings)).refund(scopes)


def _age(enqueued_at: object) -> float:
    from datetime import UTC, datetime

    assert isinstance(enqueued_at, datetime)
    stamp = enqueued_at if enqueued_at.tzinfo else enqueued_at.replace(tzinfo=UTC)
    return (datetime.now(UTC) - stamp).total_seconds()
