"""SmtpDelivery against a real SMTP server (aiosmtpd) on loopback.

The server is a real protocol peer: smtplib speaks EHLO/AUTH/MAIL/RCPT/DATA to it over TCP, so
these tests show what a relay actually receives and how real 4xx/5xx replies, a closed port and a
silent server are classified.  No Redis is needed.
"""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ivr.store.server import find_free_port
from ivr.twilio_api import PermanentDeliveryError, TransientDeliveryError
from workers.delivery import SmtpDelivery, code_email

SENDER = "no-reply@bank.example"
EMAIL_FROM = f"Example Bank <{SENDER}>"
TO = "alice@example.com"
CODE = "730164"


class Collector:
    """An aiosmtpd handler that keeps every accepted envelope, and can be told to refuse
    recipients or data with a given SMTP reply."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.rcpt_reply: str | None = None
        self.data_reply: str | None = None

    async def handle_RCPT(  # aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.data_reply:
            return self.data_reply
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


class Authenticator:
    """Accepts one login/password pair and records every attempt."""

    def __init__(self, login: str, password: str) -> None:
        self.expected = (login.encode(), password.encode())
        self.attempts: list[tuple[bytes, bytes]] = []

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.attempts.append((auth_data.login, auth_data.password))
        # handled=False: aiosmtpd itself answers 535 to a failed attempt.
        return AuthResult(
            success=(auth_data.login, auth_data.password) == self.expected, handled=False
        )


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Controller, Collector]]]:
    """``smtp_server(**controller_kwargs)`` starts an aiosmtpd server on a free loopback port;
    every server started is stopped at teardown."""
    started: list[Controller] = []

    def start(**kwargs: Any) -> tuple[Controller, Collector]:
        collector = Collector()
        controller = Controller(collector, hostname="127.0.0.1", port=find_free_port(), **kwargs)
        controller.start()
        started.append(controller)
        return controller, collector

    yield start
    for controller in started:
        controller.stop()


def parse(envelope: Envelope) -> EmailMessage:
    content = envelope.original_content or envelope.content
    assert isinstance(content, bytes)
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_delivers_a_code_email(smtp_server: Callable[..., tuple[Controller, Collector]]) -> None:
    controller, collector = smtp_server()
    subject, body = code_email("Example Bank", CODE, 10)

    SmtpDelivery(f"smtp://127.0.0.1:{controller.port}", EMAIL_FROM).send_email(TO, subject, body)

    (envelope,) = collector.envelopes
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == [TO]
    message = parse(envelope)
    assert message["From"] == EMAIL_FROM
    assert message["To"] == TO
    assert message["Subject"] == subject
    assert CODE not in message["Subject"]
    assert message["Date"]
    assert message["Message-ID"].endswith("@bank.example>")
    assert message.get_content_type() == "text/plain"
    text = message.get_content()
    assert CODE in text
    assert "Never share" in text


def test_logs_in_with_the_url_credentials(
    smtp_server: Callable[..., tuple[Controller, Collector]],
) -> None:
    # Loopback only: SmtpDelivery refuses credentials without TLS to any other host.
    authenticator = Authenticator("relay@bank", "p:ss/word")
    controller, collector = smtp_server(authenticator=authenticator, auth_require_tls=False)
    url = f"smtp://relay%40bank:p%3Ass%2Fword@127.0.0.1:{controller.port}"

    SmtpDelivery(url, EMAIL_FROM).send_email(TO, "subject", f"code {CODE}")

    assert authenticator.attempts == [(b"relay@bank", b"p:ss/word")]
    assert len(collector.envelopes) == 1


def test_a_wrong_password_is_permanent(
    smtp_server: Callable[..., tuple[Controller, Collector]],
) -> None:
    authenticator = Authenticator("relay", "right")
    controller, collector = smtp_server(authenticator=authenticator, auth_require_tls=False)
    url = f"smtp://relay:wrong-password@127.0.0.1:{controller.port}"

    with pytest.raises(PermanentDeliveryError) as raised:
        SmtpDelivery(url, EMAIL_FROM).send_email(TO, "subject", f"code {CODE}")

    assert "wrong-password" not in str(raised.value)
    assert collector.envelopes == []


def test_recipient_refused_with_550_is_permanent(
    smtp_server: Callable[..., tuple[Controller, Collector]],
) -> None:
    controller, collector = smtp_server()
    collector.rcpt_reply = f"550 5.1.1 <{TO}>: mailbox unavailable"
    subject, body = code_email("Example Bank", CODE, 10)

    with pytest.raises(PermanentDeliveryError) as raised:
        SmtpDelivery(f"smtp://127.0.0.1:{controller.port}", EMAIL_FROM).send_email(
            TO, subject, body
        )

    assert raised.value.status == 550
    assert "550" in str(raised.value)
    for secret in (CODE, body, TO):
        assert secret not in str(raised.value)
    assert raised.value.__cause__ is None
    assert collector.envelopes == []


def test_recipient_deferred_with_450_is_transient(
    smtp_server: Callable[..., tuple[Controller, Collector]],
) -> None:
    controller, collector = smtp_server()
    collector.rcpt_reply = "450 4.2.1 mailbox busy, try again later"

    with pytest.raises(TransientDeliveryError) as raised:
        SmtpDelivery(f"smtp://127.0.0.1:{controller.port}", EMAIL_FROM).send_email(
            TO, "subject", f"code {CODE}"
        )

    assert raised.value.status == 450


def test_data_rejected_with_554_is_permanent(
    smtp_server: Callable[..., tuple[Controller, Collector]],
) -> None:
    controller, collector = smtp_server()
    collector.data_reply = "554 5.6.0 message rejected"

    with pytest.raises(PermanentDeliveryError) as raised:
        SmtpDelivery(f"smtp://127.0.0.1:{controller.port}", EMAIL_FROM).send_email(
            TO, "subject", f"code {CODE}"
        )

    assert raised.value.status == 554
    assert CODE not in str(raised.value)


def test_a_closed_port_is_transient() -> None:
    port = find_free_port()  # nothing listens there

    with pytest.raises(TransientDeliveryError) as raised:
        SmtpDelivery(f"smtp://127.0.0.1:{port}", EMAIL_FROM).send_email(
            TO, "subject", f"code {CODE}"
        )

    assert "ConnectionRefusedError" in str(raised.value)


def test_a_silent_server_times_out_as_transient() -> None:
    # A socket that listens (the kernel completes the handshake) but never sends a greeting;
    # smtplib reports the read timeout as SMTPServerDisconnected.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        delivery = SmtpDelivery(f"smtp://127.0.0.1:{port}", EMAIL_FROM, timeout=0.5)

        with pytest.raises(TransientDeliveryError) as raised:
            delivery.send_email(TO, "subject", f"code {CODE}")

    assert "SMTPServerDisconnected" in str(raised.value)
