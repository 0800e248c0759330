"""The one place that talks to Twilio's REST API, through the official `twilio` client.

It lives in `ivr/` rather than `workers/` because the web process checks Twilio Verify codes while
the caller waits; it must therefore not import Flask.

Every failure leaves here as a `DeliveryError` that says only *whether a retry can help*
(`PermanentDeliveryError` / `TransientDeliveryError`) and which Twilio error code and HTTP status
caused it.  Retrying is rq's job one level up, so nothing here loops.  Twilio's own error text is
deliberately dropped: it can echo the destination number, and the request it failed on may have
carried a one-time code (SECURITY.md 11), so neither our message nor the exception chain holds
it.
"""

from __future__ import annotations

import logging
from typing import Final, Literal

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from ivr.errors import IvrError, SettingsError
from ivr.settings import Settings

log = logging.getLogger(__name__)

#: Seconds for one HTTP exchange with Twilio.  The `twilio` default is *no* timeout, which would
#: let one hung connection pin an rq worker (and, for Verify checks, a caller) indefinitely.
HTTP_TIMEOUT: Final = 10.0
#: Seconds for the web process's Verify check, to connect and again to answer (3 s at most): a
#: caller waits for it under the call's lock, which must outlive it (`ivr.store.sessions`). A
#: check that times out is an outage, and the caller is offered another method.
CHECK_TIMEOUT: Final = 1.5

#: Twilio error codes that no retry will ever fix, whatever HTTP status they came with (60203
#: arrives as 429, which would otherwise look transient).
PERMANENT_CODES: Final = frozenset(
    {
        21211,  # invalid 'To' phone number
        21408,  # permission to send to this region not enabled (Geo Permissions)
        21610,  # recipient unsubscribed (replied STOP)
        21614,  # 'To' is not a mobile number
        60200,  # Verify: invalid parameter
        60203,  # Verify: max send attempts reached (5 per destination per 10 min)
        60205,  # Verify: SMS is not supported by landline phone number
    }
)

VerifyChannel = Literal["sms", "email", "call"]


class DeliveryError(IvrError):
    """A message, call or Verify request could not be handed to the provider.

    `twilio_code` and `status` (the HTTP status, or the SMTP reply code for email) are kept as
    attributes so callers and metrics can branch on them without parsing the message.  The
    message never holds a body, a code or the provider's text.
    """

    def __init__(self, message: str, *, twilio_code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.twilio_code = twilio_code
        self.status = status


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help (bad number, unsubscribed, landline, send cap reached, bad config):
    the caller should be offered another method now rather than wait for retries."""


class TransientDeliveryError(DeliveryError):
    """The provider or the network failed this time (5xx, 429, timeout): a bounded retry may
    work."""


def make_client(
    settings: Settings,
    http_client: HttpClient | None = None,
    *,
    timeout: float = HTTP_TIMEOUT,
) -> Client:
    """A Twilio REST client from settings; fails fast, naming the variable, when one is missing.

    `http_client` is the seam for tests (a recording `HttpClient`).  The default client gets a
    timeout and no transport retries, so one call here is exactly one attempt.
    """
    if not settings.twilio_account_sid:
        raise SettingsError("TWILIO_ACCOUNT_SID: required when a Twilio delivery backend is used")
    if not settings.twilio_auth_token:
        raise SettingsError("TWILIO_AUTH_TOKEN: required when a Twilio delivery backend is used")
    return Client(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        http_client=http_client or TwilioHttpClient(timeout=timeout),
    )


def _is_transient_status(status: int | None) -> bool:
    # No status at all means we never got a real answer: treat like a network failure.
    return status is None or status == 429 or status >= 500


def classify(exc: BaseException, action: str = "Twilio request") -> DeliveryError:
    """Map an exception raised by the `twilio` client to Permanent/Transient.

    Use as ``raise classify(exc, "sms send") from None``: `from None` keeps Twilio's text (which
    may quote the number) out of the traceback rq stores in Redis for a failed job.

    Order matters: a listed permanent Twilio code wins over its HTTP status; then 429 and 5xx are
    transient and every other 4xx is permanent.  Network failures and timeouts are transient.
    """
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        # The legacy and the RFC 9457 error shapes both carry an HTTP status and a Twilio code.
        status = exc.status if isinstance(exc.status, int) else None
        code = exc.code if isinstance(exc.code, int) else None
        what = f"{action} failed: Twilio error {code} (HTTP {status})"
        if code is not None:
            what += f", see https://www.twilio.com/docs/errors/{code}"
        if code in PERMANENT_CODES or not _is_transient_status(status):
            return PermanentDeliveryError(what, twilio_code=code, status=status)
        return TransientDeliveryError(what, twilio_code=code, status=status)
    if isinstance(exc, requests.RequestException | OSError):
        # Connection refused/reset, DNS, TLS handshake, connect/read timeouts: worth a retry.
        return TransientDeliveryError(f"{action} failed: network error ({type(exc).__name__})")
    if isinstance(exc, TwilioException):
        # Raised by the client itself (e.g. missing credentials): a configuration problem.
        return PermanentDeliveryError(
            f"{action} failed: Twilio client error ({type(exc).__name__})"
        )
    # E.g. a proxy answering 200 with HTML (JSON decode error): we cannot know it failed for good.
    return TransientDeliveryError(f"{action} failed: unexpected {type(exc).__name__}")


#: What the Twilio client can raise for a failed request; anything else is a bug and propagates.
CLIENT_ERRORS: Final = (TwilioException, requests.RequestException, OSError, ValueError)


class TwilioVerify:
    """Twilio Verify: Twilio makes, sends and checks the code, so we never see it on the way out.

    `start` is called by a worker (send job), `check` by the web process while the caller waits.
    """

    def __init__(self, client: Client, service_sid: str) -> None:
        self._service = client.verify.v2.services(service_sid)

    def start(self, to: str, channel: VerifyChannel) -> None:
        """Ask Twilio to send a code.  A resend within 10 minutes repeats the same code."""
        try:
            self._service.verifications.create(to=to, channel=channel)
        except CLIENT_ERRORS as exc:
            raise classify(exc, f"Verify {channel} start") from None

    def check(self, to: str, code: str) -> bool:
        """True only when Twilio says "approved".

        A wrong code is "pending" (False).  404 means there is no pending verification (expired,
        already approved, never started) and 60202 means the 5 check attempts are used up: both
        are a plain "no" for the caller, not an outage, so they return False.  Anything else is a
        provider failure and raises, so the caller can be offered another method.
        """
        try:
            result = self._service.verification_checks.create(to=to, code=code)
        except CLIENT_ERRORS as exc:
            refused = classify(exc, "Verify check")
            if refused.status == 404 or refused.twilio_code in (20404, 60202):
                log.info("Verify check refused: Twilio error %s", refused.twilio_code)
                return False
            raise refused from None
        return result.status == "approved"
