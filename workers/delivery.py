"""Delivery backends: how a one-time code or a callback leaves the building.

A job in the worker holds the only plaintext copy of a code (SECURITY.md 11).  It asks
`delivery_for(settings, channel)` for a backend and makes exactly ONE attempt; a failure is raised
as a typed `DeliveryError` (permanent or transient) and rq decides about retries, so a retry never
outlives the code it carries (SECURITY.md 26).  Nothing here logs or raises with a message body, a
code or a provider's free text.

Backends:
- `OutboxDelivery`: the development stand-in for the customer's phone and mailbox (a file).
- `TwilioDelivery`: SMS and outbound calls through Twilio Programmable Messaging / Voice.
- `SmtpDelivery`: email through an SMTP relay (stdlib `smtplib`).
Twilio Verify is not a `Delivery`: Twilio makes the code, so the caller uses `TwilioVerify`.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import secrets
import smtplib
import ssl
from email.message import EmailMessage
from typing import Final, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from twilio.http import HttpClient
from twilio.rest import Client

from ivr.errors import SettingsError
from ivr.outbox import Outbox, OutboxMessage
from ivr.settings import Settings
from ivr.twilio_api import (
    CLIENT_ERRORS,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    classify,
    make_client,
)

log = logging.getLogger(__name__)

Channel = Literal["sms", "email", "call"]

SMTP_TIMEOUT: Final = 10.0
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


class Delivery(Protocol):
    """What a send job needs; each backend supports some channels and refuses the others with
    `PermanentDeliveryError` (a retry would not make SMTP send an SMS)."""

    def send_sms(self, to: str, body: str) -> None: ...

    def send_email(self, to: str, subject: str, body: str) -> None: ...

    def place_call(self, to: str, url: str) -> str:
        """Start an outbound call whose TwiML is fetched from `url`; returns its CallSid."""
        ...


# --------------------------------------------------------------------------------------------
# Message texts
# --------------------------------------------------------------------------------------------


def code_message(brand: str, code: str, minutes: int) -> str:
    """The SMS text: short (one GSM-7 segment for a typical brand), no personal data, and the
    anti-phishing line, because the commonest attack on SMS codes is a fake "bank" asking for it."""
    return (
        f"{brand}: your verification code is {code}. It expires in {minutes} minutes. "
        "Never share it; we will never ask you for it."
    )


def code_email(brand: str, code: str, minutes: int) -> tuple[str, str]:
    """(subject, body) of the code email.  The code stays out of the subject, which mail clients
    show on lock screens and in notification previews."""
    subject = f"{brand} verification code"
    body = (
        f"Your {brand} verification code is:\n\n"
        f"    {code}\n\n"
        f"It expires in {minutes} minutes and can be used once.\n\n"
        "Never share this code with anyone. We will never ask you for it, by phone, email or "
        "message.\n"
        "If you did not ask for a code, you can ignore this email.\n"
    )
    return subject, body


# --------------------------------------------------------------------------------------------
# Outbox (development)
# --------------------------------------------------------------------------------------------


class OutboxDelivery:
    """Appends to the development outbox, where `ivr outbox` and the call simulator read it."""

    def __init__(self, outbox: Outbox, brand: str = "Example Bank") -> None:
        self.outbox = outbox
        self.brand = brand

    def send_sms(self, to: str, body: str) -> None:
        self.outbox.append(OutboxMessage(channel="sms", to=to, body=body))

    def send_email(self, to: str, subject: str, body: str) -> None:
        self.outbox.append(OutboxMessage(channel="email", to=to, body=body, subject=subject))

    def place_call(self, to: str, url: str) -> str:
        """Records a fake outbound call; the simulator "answers" it with this CallSid."""
        call_sid = "CA" + secrets.token_hex(16)
        self.outbox.append(
            OutboxMessage(
                channel="call", to=to, body=f"Incoming call from {self.brand}", call_sid=call_sid
            )
        )
        return call_sid


# --------------------------------------------------------------------------------------------
# Twilio Programmable Messaging / Voice
# --------------------------------------------------------------------------------------------


class TwilioDelivery:
    """SMS and outbound calls through the official `twilio` REST client.

    `sms_from` is a sending number (E.164) or a Messaging Service SID ("MG..."), which Twilio
    prefers for sender pools and compliance; `caller_id` must be a Twilio number or verified ID.
    """

    def __init__(self, client: Client, sms_from: str | None, caller_id: str | None) -> None:
        self.client = client
        self.sms_from = sms_from
        self.caller_id = caller_id

    def send_sms(self, to: str, body: str) -> None:
        if not self.sms_from:
            raise SettingsError("IVR_SMS_FROM: required to send SMS through Twilio")
        sender = (
            {"messaging_service_sid": self.sms_from}
            if self.sms_from.startswith("MG")
            else {"from_": self.sms_from}
        )
        try:
            self.client.messages.create(to=to, body=body, **sender)
        except CLIENT_ERRORS as exc:
            raise classify(exc, "SMS send") from None

    def send_email(self, to: str, subject: str, body: str) -> None:
        raise PermanentDeliveryError("email is not a Twilio Programmable Messaging channel")

    def place_call(self, to: str, url: str) -> str:
        if not self.caller_id:
            raise SettingsError("IVR_CALLER_ID: required to place calls through Twilio")
        try:
            call = self.client.calls.create(to=to, from_=self.caller_id, url=url, method="POST")
        except CLIENT_ERRORS as exc:
            raise classify(exc, "call placement") from None
        return str(call.sid)


# --------------------------------------------------------------------------------------------
# SMTP
# --------------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpDelivery:
    """Email through an SMTP relay: ``smtp://[user:pass@]host[:port][?starttls=1]`` or
    ``smtps://...`` (implicit TLS).  The URL is parsed here, at construction, so a bad
    IVR_SMTP_URL stops the worker at start-up instead of failing every send.  Errors never quote
    the URL: it holds the relay password.
    """

    def __init__(self, smtp_url: str, email_from: str, timeout: float = SMTP_TIMEOUT) -> None:
        parts = urlsplit(smtp_url)
        if parts.scheme not in ("smtp", "smtps"):
            raise SettingsError("IVR_SMTP_URL: scheme must be smtp:// or smtps://")
        try:
            port = parts.port
        except ValueError:
            raise SettingsError("IVR_SMTP_URL: the port is not a number") from None
        if not parts.hostname:
            raise SettingsError("IVR_SMTP_URL: no host")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"starttls"}
        if unknown:
            raise SettingsError(f"IVR_SMTP_URL: unknown option(s) {', '.join(sorted(unknown))}")
        starttls_value = query.get("starttls", ["0"])[-1].lower()
        if starttls_value not in _TRUE | _FALSE:
            raise SettingsError("IVR_SMTP_URL: starttls must be 1 or 0")
        self.implicit_tls = parts.scheme == "smtps"
        self.starttls = starttls_value in _TRUE
        if self.implicit_tls and self.starttls:
            raise SettingsError("IVR_SMTP_URL: use smtps:// or ?starttls=1, not both")
        self.host = parts.hostname
        self.port = port or (465 if self.implicit_tls else 25)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password or "") if parts.username else None
        if self._username and not (self.implicit_tls or self.starttls or _is_loopback(self.host)):
            # Refuse to send a relay password in clear across a network.
            raise SettingsError("IVR_SMTP_URL: credentials need smtps:// or ?starttls=1")

        _, address = email.utils.parseaddr(email_from)
        if "@" not in address or any(c in email_from for c in "\r\n"):
            raise SettingsError("IVR_EMAIL_FROM: not an email address")
        self.email_from = email_from
        self._from_domain = address.rpartition("@")[2]
        self.timeout = timeout

    def __repr__(self) -> str:  # never show the password
        scheme = "smtps" if self.implicit_tls else "smtp"
        return f"<SmtpDelivery {scheme}://{self.host}:{self.port} starttls={self.starttls}>"

    def send_sms(self, to: str, body: str) -> None:
        raise PermanentDeliveryError("SMS cannot be sent by SMTP")

    def place_call(self, to: str, url: str) -> str:
        raise PermanentDeliveryError("calls cannot be placed by SMTP")

    def build_message(self, to: str, subject: str, body: str) -> EmailMessage:
        """A plain-text message with the headers spam filters expect (Date, Message-ID)."""
        _, address = email.utils.parseaddr(to)
        if "@" not in address or address != to.strip() or any(c in to for c in "\r\n"):
            # Header injection or a malformed record on file: no retry will fix it.
            raise PermanentDeliveryError("the recipient is not a plain email address")
        message = EmailMessage()
        message["From"] = self.email_from
        message["To"] = address
        message["Subject"] = subject
        message["Date"] = email.utils.formatdate(usegmt=True)
        message["Message-ID"] = email.utils.make_msgid(domain=self._from_domain)
        message.set_content(body)
        return message

    def send_email(self, to: str, subject: str, body: str) -> None:
        message = self.build_message(to, subject, body)
        try:
            self._send(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise _classify_smtp(exc) from None

    def _send(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.implicit_tls:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.starttls:
                smtp.starttls(context=context)
            if self._username is not None:
                smtp.login(self._username, self._password or "")
            smtp.send_message(message)


def _classify_smtp(exc: smtplib.SMTPException | OSError) -> DeliveryError:
    """5xx replies are permanent; 4xx, dropped connections and timeouts are transient.  Only the
    SMTP reply code goes into the message: the server's text can quote the address."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        what = f"email send failed: recipient refused (SMTP {', '.join(map(str, codes))})"
        if codes and all(500 <= code < 600 for code in codes):
            return PermanentDeliveryError(what, status=codes[0])
        return TransientDeliveryError(what, status=codes[0] if codes else None)
    if isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError):
        return TransientDeliveryError(f"email send failed: connection lost ({type(exc).__name__})")
    if isinstance(exc, smtplib.SMTPResponseException):
        # SMTPSenderRefused, SMTPDataError, SMTPAuthenticationError, SMTPHeloError...
        code = exc.smtp_code
        what = f"email send failed: {type(exc).__name__} (SMTP {code})"
        if 500 <= code < 600:
            return PermanentDeliveryError(what, status=code)
        return TransientDeliveryError(what, status=code)
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Not a glitch: the relay's certificate does not match. Retrying would not fix it.
        return PermanentDeliveryError("email send failed: the SMTP server's certificate is invalid")
    if isinstance(exc, OSError):
        # Refused, reset, DNS failure, timeout (TimeoutError is an OSError).
        return TransientDeliveryError(f"email send failed: network error ({type(exc).__name__})")
    # SMTPNotSupportedError (no STARTTLS/AUTH offered), no usable AUTH mechanism: configuration.
    return PermanentDeliveryError(f"email send failed: {type(exc).__name__}")


# --------------------------------------------------------------------------------------------
# Choosing a backend
# --------------------------------------------------------------------------------------------


def delivery_for(
    settings: Settings, channel: Channel, *, http_client: HttpClient | None = None
) -> Delivery:
    """The backend configured for `channel`, checked for the settings it needs *now*, so a send
    job fails on its first attempt with the variable's name rather than halfway through.

    "verify" backends raise ValueError: Twilio Verify makes its own code, so the job must use
    `ivr.twilio_api.TwilioVerify` instead of sending a code of ours.
    """
    backend = {
        "sms": settings.sms_backend,
        "email": settings.email_backend,
        "call": settings.call_backend,
    }.get(channel)
    if backend is None:
        raise ValueError(f"unknown channel {channel!r}")
    if backend == "outbox":
        return OutboxDelivery(Outbox(settings.outbox), brand=settings.brand)
    if backend == "twilio":
        if channel == "sms" and not settings.sms_from:
            raise SettingsError("IVR_SMS_FROM: required when IVR_SMS_BACKEND=twilio")
        if channel == "call" and not settings.caller_id:
            raise SettingsError("IVR_CALLER_ID: required when IVR_CALL_BACKEND=twilio")
        return TwilioDelivery(
            make_client(settings, http_client), settings.sms_from, settings.caller_id
        )
    if backend == "smtp":
        if not settings.smtp_url:
            raise SettingsError("IVR_SMTP_URL: required when IVR_EMAIL_BACKEND=smtp")
        if not settings.email_from:
            raise SettingsError("IVR_EMAIL_FROM: required when IVR_EMAIL_BACKEND=smtp")
        return SmtpDelivery(settings.smtp_url, settings.email_from)
    raise ValueError(
        f"{channel} backend {backend!r} is not a Delivery; use ivr.twilio_api.TwilioVerify"
    )
