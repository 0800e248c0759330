"""Delivery backends, checked at the HTTP boundary of the real `twilio` client.

Nothing of ours is mocked: a recording `twilio.http.HttpClient` stands where the network would be,
so these tests pin the exact requests Twilio receives (URL, form fields, basic auth) and run the
library's own error parsing on Twilio-shaped JSON error bodies.
"""

from __future__ import annotations

import json
import logging
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from ivr.errors import SettingsError
from ivr.outbox import Outbox
from ivr.settings import Settings, load_settings
from ivr.twilio_api import (
    HTTP_TIMEOUT,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    TwilioVerify,
    classify,
    make_client,
)
from workers.delivery import (
    OutboxDelivery,
    SmtpDelivery,
    TwilioDelivery,
    code_email,
    code_message,
    delivery_for,
)

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "unit-test-twilio-auth-token"
SERVICE_SID = "VA" + "fedcba9876543210" * 2
MESSAGING_SID = "MG" + "00112233445566778899aabbccddeeff"
SMS_FROM = "+14155550199"
CALLER_ID = "+14155550198"
TO = "+14155550100"
CODE = "482915"
BODY = code_message("Example Bank", CODE, 10)
CALL_URL = "https://ivr.example.com/voice/callback?ref=abc"

API = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}"
VERIFY = f"https://verify.twilio.com/v2/Services/{SERVICE_SID}"


# --------------------------------------------------------------------------------------------
# The HTTP boundary
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    method: str
    url: str
    params: dict[str, object] | None
    data: dict[str, object] | None
    headers: dict[str, str] | None
    auth: tuple[str, str] | None


class RecordingHttpClient(HttpClient):
    """Answers each request with the next queued (status, JSON) pair, or raises a queued
    exception, and records what the `twilio` client sent."""

    def __init__(self, *answers: tuple[int, Any] | BaseException) -> None:
        super().__init__(logging.getLogger("tests.twilio_http"), is_async=False)
        self.answers: deque[tuple[int, Any] | BaseException] = deque(answers)
        self.sent: list[Sent] = []

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        self.sent.append(Sent(method, url, params, data, headers, auth))
        answer = self.answers.popleft()
        if isinstance(answer, BaseException):
            raise answer
        status, payload = answer
        return Response(status, payload if isinstance(payload, str) else json.dumps(payload))

    @property
    def only(self) -> Sent:
        assert len(self.sent) == 1, self.sent
        return self.sent[0]


def client(http: HttpClient) -> Client:
    return Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http)


def twilio_error(code: int, status: int, message: str = "Something went wrong.") -> tuple[int, Any]:
    """An error response shaped like Twilio's legacy JSON errors."""
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


MESSAGE_OK = (201, {"sid": "SM" + "1" * 32, "status": "queued", "to": TO})
CALL_OK = (201, {"sid": "CA" + "2" * 32, "status": "queued", "to": TO})
VERIFICATION_OK = (201, {"sid": "VE" + "3" * 32, "status": "pending", "channel": "sms"})


def check_answer(status: str) -> tuple[int, Any]:
    return 200, {"sid": "VE" + "3" * 32, "status": status, "valid": status == "approved"}


def assert_discreet(exc: BaseException, *secrets_: str) -> None:
    """Neither our message nor a chained exception may carry a code, a body or a number."""
    text = str(exc)
    for secret in (CODE, BODY, TO, *secrets_):
        assert secret not in text
    assert exc.__cause__ is None
    assert exc.__suppress_context__


# --------------------------------------------------------------------------------------------
# make_client
# --------------------------------------------------------------------------------------------


def settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings with every delivery field explicit: the developer's environment must not leak in."""
    base: dict[str, object] = {
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "sms_backend": "outbox",
        "email_backend": "outbox",
        "call_backend": "outbox",
        "outbox": tmp_path / "outbox.jsonl",
        "sms_from": SMS_FROM,
        "caller_id": CALLER_ID,
        "verify_service_sid": SERVICE_SID,
        "smtp_url": "smtp://127.0.0.1:2525",
        "email_from": "Example Bank <no-reply@bank.example>",
        "brand": "Example Bank",
    }
    base.update(overrides)
    return load_settings(**base)


class TestMakeClient:
    def test_authenticates_with_the_account_sid(self, tmp_path: Path) -> None:
        http = RecordingHttpClient(MESSAGE_OK)
        made = make_client(settings(tmp_path), http)
        TwilioDelivery(made, SMS_FROM, None).send_sms(TO, BODY)
        assert http.only.auth == (ACCOUNT_SID, AUTH_TOKEN)

    def test_default_http_client_has_a_timeout(self, tmp_path: Path) -> None:
        made = make_client(settings(tmp_path))
        assert isinstance(made.http_client, TwilioHttpClient)
        assert made.http_client.timeout == HTTP_TIMEOUT

    @pytest.mark.parametrize(
        ("missing", "variable"),
        [
            ("twilio_account_sid", "TWILIO_ACCOUNT_SID:"),
            ("twilio_auth_token", "TWILIO_AUTH_TOKEN:"),
        ],
    )
    def test_missing_credentials_name_the_variable(
        self, tmp_path: Path, missing: str, variable: str
    ) -> None:
        with pytest.raises(SettingsError) as raised:
            make_client(settings(tmp_path, **{missing: None}))
        assert str(raised.value).startswith(variable)


# --------------------------------------------------------------------------------------------
# TwilioDelivery: Programmable Messaging and Voice
# --------------------------------------------------------------------------------------------


class TestTwilioSms:
    def test_sends_from_a_number(self) -> None:
        http = RecordingHttpClient(MESSAGE_OK)
        TwilioDelivery(client(http), SMS_FROM, None).send_sms(TO, BODY)
        sent = http.only
        assert sent.method == "POST"
        assert sent.url == f"{API}/Messages.json"
        assert sent.data == {"To": TO, "From": SMS_FROM, "Body": BODY}
        assert sent.auth == (ACCOUNT_SID, AUTH_TOKEN)

    def test_sends_through_a_messaging_service(self) -> None:
        http = RecordingHttpClient(MESSAGE_OK)
        TwilioDelivery(client(http), MESSAGING_SID, None).send_sms(TO, BODY)
        assert http.only.url == f"{API}/Messages.json"
        assert http.only.data == {"To": TO, "MessagingServiceSid": MESSAGING_SID, "Body": BODY}

    @pytest.mark.parametrize(
        ("code", "status"),
        [
            (21211, 400),  # invalid 'To'
            (21614, 400),  # not a mobile number
            (21610, 400),  # unsubscribed (STOP)
            (21408, 400),  # region not enabled
            (21606, 400),  # any other 4xx: 'From' not SMS capable
            (20003, 401),  # bad credentials
            (20404, 404),
        ],
    )
    def test_client_errors_are_permanent(self, code: int, status: int) -> None:
        http = RecordingHttpClient(
            twilio_error(code, status, f"The 'To' number {TO} is not valid for: {BODY}")
        )
        with pytest.raises(PermanentDeliveryError) as raised:
            TwilioDelivery(client(http), SMS_FROM, None).send_sms(TO, BODY)
        assert raised.value.twilio_code == code
        assert raised.value.status == status
        assert str(code) in str(raised.value)
        assert str(status) in str(raised.value)
        assert_discreet(raised.value)
        assert len(http.sent) == 1  # one attempt: retries are rq's job

    @pytest.mark.parametrize(
        ("code", "status"),
        [(20500, 500), (20503, 503), (20429, 429)],
    )
    def test_server_errors_and_throttling_are_transient(self, code: int, status: int) -> None:
        http = RecordingHttpClient(twilio_error(code, status))
        with pytest.raises(TransientDeliveryError) as raised:
            TwilioDelivery(client(http), SMS_FROM, None).send_sms(TO, BODY)
        assert (raised.value.twilio_code, raised.value.status) == (code, status)
        assert_discreet(raised.value)
        assert len(http.sent) == 1

    def test_a_non_json_gateway_error_is_transient(self) -> None:
        http = RecordingHttpClient((502, "<html>Bad Gateway</html>"))
        with pytest.raises(TransientDeliveryError) as raised:
            TwilioDelivery(client(http), SMS_FROM, None).send_sms(TO, BODY)
        assert raised.value.status == 502

    @pytest.mark.parametrize(
        "failure",
        [
            requests.ConnectionError(f"connection refused sending {BODY}"),
            requests.ConnectTimeout("connect timed out"),
            requests.ReadTimeout("read timed out"),
        ],
    )
    def test_network_failures_are_transient(self, failure: Exception) -> None:
        http = RecordingHttpClient(failure)
        with pytest.raises(TransientDeliveryError) as raised:
            TwilioDelivery(client(http), SMS_FROM, None).send_sms(TO, BODY)
        assert type(failure).__name__ in str(raised.value)
        assert_discreet(raised.value)

    def test_missing_sender_names_the_variable(self) -> None:
        http = RecordingHttpClient()
        with pytest.raises(SettingsError, match=r"^IVR_SMS_FROM:"):
            TwilioDelivery(client(http), None, CALLER_ID).send_sms(TO, BODY)
        assert http.sent == []

    def test_email_is_refused_for_good(self) -> None:
        http = RecordingHttpClient()
        with pytest.raises(PermanentDeliveryError, match="not a Twilio Programmable Messaging"):
            TwilioDelivery(client(http), SMS_FROM, CALLER_ID).send_email("a@b.example", "s", BODY)
        assert http.sent == []


class TestTwilioCall:
    def test_places_a_call_and_returns_its_sid(self) -> None:
        http = RecordingHttpClient(CALL_OK)
        sid = TwilioDelivery(client(http), None, CALLER_ID).place_call(TO, CALL_URL)
        assert sid == "CA" + "2" * 32
        sent = http.only
        assert sent.method == "POST"
        assert sent.url == f"{API}/Calls.json"
        assert sent.data == {"To": TO, "From": CALLER_ID, "Url": CALL_URL, "Method": "POST"}
        assert sent.auth == (ACCOUNT_SID, AUTH_TOKEN)

    def test_invalid_number_is_permanent(self) -> None:
        http = RecordingHttpClient(twilio_error(21211, 400, f"The 'To' number {TO} is invalid."))
        with pytest.raises(PermanentDeliveryError) as raised:
            TwilioDelivery(client(http), None, CALLER_ID).place_call(TO, CALL_URL)
        assert_discreet(raised.value)

    def test_server_error_is_transient(self) -> None:
        http = RecordingHttpClient(twilio_error(20500, 500))
        with pytest.raises(TransientDeliveryError):
            TwilioDelivery(client(http), None, CALLER_ID).place_call(TO, CALL_URL)

    def test_missing_caller_id_names_the_variable(self) -> None:
        http = RecordingHttpClient()
        with pytest.raises(SettingsError, match=r"^IVR_CALLER_ID:"):
            TwilioDelivery(client(http), SMS_FROM, None).place_call(TO, CALL_URL)
        assert http.sent == []


# --------------------------------------------------------------------------------------------
# Twilio Verify
# --------------------------------------------------------------------------------------------


class TestVerifyStart:
    @pytest.mark.parametrize("channel", ["sms", "call", "email"])
    def test_starts_a_verification(self, channel: str) -> None:
        http = RecordingHttpClient(VERIFICATION_OK)
        TwilioVerify(client(http), SERVICE_SID).start(TO, channel)  # type: ignore[arg-type]
        sent = http.only
        assert sent.method == "POST"
        assert sent.url == f"{VERIFY}/Verifications"
        assert sent.data == {"To": TO, "Channel": channel}
        assert sent.auth == (ACCOUNT_SID, AUTH_TOKEN)

    @pytest.mark.parametrize(
        ("code", "status"),
        [
            (60200, 400),  # invalid parameter
            (60203, 429),  # max send attempts: permanent although it comes as 429
            (60205, 400),  # SMS not supported by landline
            (21408, 400),
        ],
    )
    def test_refusals_are_permanent(self, code: int, status: int) -> None:
        http = RecordingHttpClient(twilio_error(code, status, f"Refused for {TO}"))
        with pytest.raises(PermanentDeliveryError) as raised:
            TwilioVerify(client(http), SERVICE_SID).start(TO, "sms")
        assert raised.value.twilio_code == code
        assert f"Twilio error {code} (HTTP {status})" in str(raised.value)
        assert_discreet(raised.value)

    @pytest.mark.parametrize(("code", "status"), [(20500, 500), (20429, 429)])
    def test_outages_are_transient(self, code: int, status: int) -> None:
        http = RecordingHttpClient(twilio_error(code, status))
        with pytest.raises(TransientDeliveryError):
            TwilioVerify(client(http), SERVICE_SID).start(TO, "sms")


class TestVerifyCheck:
    def test_sends_the_code_to_verification_check(self) -> None:
        http = RecordingHttpClient(check_answer("approved"))
        assert TwilioVerify(client(http), SERVICE_SID).check(TO, CODE) is True
        sent = http.only
        assert sent.method == "POST"
        assert sent.url == f"{VERIFY}/VerificationCheck"
        assert sent.data == {"To": TO, "Code": CODE}
        assert sent.auth == (ACCOUNT_SID, AUTH_TOKEN)

    @pytest.mark.parametrize("status", ["pending", "canceled", "expired", "failed", ""])
    def test_only_approved_is_true(self, status: str) -> None:
        http = RecordingHttpClient(check_answer(status))
        assert TwilioVerify(client(http), SERVICE_SID).check(TO, CODE) is False

    @pytest.mark.parametrize(
        ("code", "status"),
        [
            (20404, 404),  # no pending verification: expired, used, never started
            (60202, 429),  # max check attempts reached
        ],
    )
    def test_no_pending_or_exhausted_is_false(
        self, code: int, status: int, caplog: pytest.LogCaptureFixture
    ) -> None:
        http = RecordingHttpClient(twilio_error(code, status))
        with caplog.at_level(logging.DEBUG):
            assert TwilioVerify(client(http), SERVICE_SID).check(TO, CODE) is False
        assert CODE not in caplog.text
        assert len(http.sent) == 1

    @pytest.mark.parametrize(
        ("answer", "error"),
        [
            (twilio_error(20500, 500), TransientDeliveryError),
            (twilio_error(20429, 429), TransientDeliveryError),
            (twilio_error(20003, 401), PermanentDeliveryError),
            (twilio_error(60200, 400, f"Invalid parameter: Code {CODE}"), PermanentDeliveryError),
            (requests.ReadTimeout(f"timed out checking {CODE}"), TransientDeliveryError),
        ],
    )
    def test_provider_failures_raise(
        self, answer: tuple[int, Any] | Exception, error: type[DeliveryError]
    ) -> None:
        http = RecordingHttpClient(answer)
        with pytest.raises(error) as raised:
            TwilioVerify(client(http), SERVICE_SID).check(TO, CODE)
        assert_discreet(raised.value)


class TestClassify:
    def test_rfc9457_errors_are_classified_by_code_and_status(self) -> None:
        exc = TwilioServiceException(
            type_uri="https://www.twilio.com/docs/errors/20429",
            title="Too Many Requests",
            status=429,
            code=20429,
            detail=f"about {TO}",
        )
        result = classify(exc)
        assert isinstance(result, TransientDeliveryError)
        assert result.twilio_code == 20429

    def test_listed_permanent_code_beats_a_5xx_status(self) -> None:
        assert isinstance(
            classify(TwilioRestException(503, "/x", code=21211)), PermanentDeliveryError
        )

    def test_an_error_without_a_code_uses_the_status(self) -> None:
        assert isinstance(
            classify(TwilioRestException(400, "/x", code=None)), PermanentDeliveryError
        )
        assert isinstance(
            classify(TwilioRestException(500, "/x", code=None)), TransientDeliveryError
        )

    def test_delivery_errors_pass_through(self) -> None:
        error = PermanentDeliveryError("already classified")
        assert classify(error) is error

    def test_timeouts_are_transient(self) -> None:
        assert isinstance(classify(TimeoutError()), TransientDeliveryError)


# --------------------------------------------------------------------------------------------
# OutboxDelivery
# --------------------------------------------------------------------------------------------


class TestOutboxDelivery:
    def test_sms_and_email_are_readable_back(self, tmp_path: Path) -> None:
        outbox = Outbox(tmp_path / "outbox.jsonl")
        delivery = OutboxDelivery(outbox)
        subject, body = code_email("Example Bank", CODE, 10)
        delivery.send_sms(TO, BODY)
        delivery.send_email("alice@example.com", subject, body)
        sms, mail = outbox.messages()
        assert (sms.channel, sms.to, sms.body, sms.subject) == ("sms", TO, BODY, None)
        assert (mail.channel, mail.to, mail.subject, mail.body) == (
            "email",
            "alice@example.com",
            subject,
            body,
        )
        lines = outbox.path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 2
        assert json.loads(lines[0])["body"] == BODY

    def test_place_call_returns_a_fresh_call_sid(self, tmp_path: Path) -> None:
        outbox = Outbox(tmp_path / "outbox.jsonl")
        delivery = OutboxDelivery(outbox, brand="Acme Bank")
        first = delivery.place_call(TO, CALL_URL)
        second = delivery.place_call(TO, CALL_URL)
        assert re.fullmatch(r"CA[0-9a-f]{32}", first)
        assert first != second
        calls = outbox.messages()
        assert [m.call_sid for m in calls] == [first, second]
        assert all(m.channel == "call" and m.to == TO for m in calls)
        assert "Acme Bank" in calls[0].body


# --------------------------------------------------------------------------------------------
# delivery_for
# --------------------------------------------------------------------------------------------


class TestDeliveryFor:
    @pytest.mark.parametrize("channel", ["sms", "email", "call"])
    def test_outbox_by_default(self, tmp_path: Path, channel: str) -> None:
        chosen = delivery_for(settings(tmp_path), channel)  # type: ignore[arg-type]
        assert isinstance(chosen, OutboxDelivery)
        assert chosen.outbox.path == tmp_path / "outbox.jsonl"

    def test_twilio_sms_goes_through_the_given_http_client(self, tmp_path: Path) -> None:
        http = RecordingHttpClient(MESSAGE_OK)
        chosen = delivery_for(settings(tmp_path, sms_backend="twilio"), "sms", http_client=http)
        assert isinstance(chosen, TwilioDelivery)
        chosen.send_sms(TO, BODY)
        assert http.only.url == f"{API}/Messages.json"

    def test_twilio_call(self, tmp_path: Path) -> None:
        chosen = delivery_for(settings(tmp_path, call_backend="twilio"), "call")
        assert isinstance(chosen, TwilioDelivery)

    def test_smtp_email(self, tmp_path: Path) -> None:
        chosen = delivery_for(settings(tmp_path, email_backend="smtp"), "email")
        assert isinstance(chosen, SmtpDelivery)
        assert (chosen.host, chosen.port) == ("127.0.0.1", 2525)

    @pytest.mark.parametrize(
        ("overrides", "channel", "variable"),
        [
            ({"sms_backend": "twilio", "sms_from": None}, "sms", "IVR_SMS_FROM"),
            ({"call_backend": "twilio", "caller_id": None}, "call", "IVR_CALLER_ID"),
            ({"sms_backend": "twilio", "twilio_account_sid": None}, "sms", "TWILIO_ACCOUNT_SID"),
            ({"call_backend": "twilio", "twilio_auth_token": None}, "call", "TWILIO_AUTH_TOKEN"),
            ({"email_backend": "smtp", "smtp_url": None}, "email", "IVR_SMTP_URL"),
            ({"email_backend": "smtp", "email_from": None}, "email", "IVR_EMAIL_FROM"),
        ],
    )
    def test_missing_settings_are_named(
        self, tmp_path: Path, overrides: dict[str, object], channel: str, variable: str
    ) -> None:
        with pytest.raises(SettingsError) as raised:
            delivery_for(settings(tmp_path, **overrides), channel)  # type: ignore[arg-type]
        assert str(raised.value).startswith(f"{variable}:")

    @pytest.mark.parametrize(
        ("overrides", "channel"),
        [({"sms_backend": "verify"}, "sms"), ({"email_backend": "verify"}, "email")],
    )
    def test_verify_is_not_a_delivery(
        self, tmp_path: Path, overrides: dict[str, object], channel: str
    ) -> None:
        with pytest.raises(ValueError, match="TwilioVerify"):
            delivery_for(settings(tmp_path, **overrides), channel)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# SmtpDelivery configuration (the wire is tested in tests/integration/test_smtp.py)
# --------------------------------------------------------------------------------------------


class TestSmtpUrl:
    def test_defaults(self) -> None:
        plain = SmtpDelivery("smtp://mail.example.com", "no-reply@bank.example")
        assert (plain.port, plain.implicit_tls, plain.starttls) == (25, False, False)
        tls = SmtpDelivery("smtps://mail.example.com", "no-reply@bank.example")
        assert (tls.port, tls.implicit_tls, tls.starttls) == (465, True, False)

    def test_starttls_and_percent_encoded_credentials(self) -> None:
        smtp = SmtpDelivery(
            "smtp://relay%40bank:p%3Ass%2Fword@mail.example.com:587?starttls=1",
            "no-reply@bank.example",
        )
        assert (smtp.host, smtp.port, smtp.starttls) == ("mail.example.com", 587, True)
        assert (smtp._username, smtp._password) == ("relay@bank", "p:ss/word")
        assert "p:ss" not in repr(smtp) and "p%3Ass" not in repr(smtp)

    @pytest.mark.parametrize(
        "url",
        [
            "http://mail.example.com",
            "smtp://",
            "smtp://mail.example.com:port",
            "smtp://mail.example.com?tls=1",
            "smtp://mail.example.com?starttls=maybe",
            "smtps://mail.example.com?starttls=1",
            "smtp://user:s3cret-pw@mail.example.com",  # password in clear over the network
        ],
    )
    def test_bad_urls_name_the_variable_without_quoting_it(self, url: str) -> None:
        with pytest.raises(SettingsError) as raised:
            SmtpDelivery(url, "no-reply@bank.example")
        assert str(raised.value).startswith("IVR_SMTP_URL:")
        assert "s3cret-pw" not in str(raised.value)

    def test_credentials_in_clear_are_allowed_to_loopback(self) -> None:
        assert SmtpDelivery("smtp://user:pw@127.0.0.1:2525", "a@bank.example")._username == "user"

    @pytest.mark.parametrize("sender", ["no-reply", "a@b.example\r\nBcc: x@evil.example"])
    def test_bad_sender(self, sender: str) -> None:
        with pytest.raises(SettingsError, match=r"^IVR_EMAIL_FROM:"):
            SmtpDelivery("smtp://127.0.0.1", sender)

    @pytest.mark.parametrize(
        "to", ["alice", "alice@example.com\r\nBcc: x@evil.example", "Alice <alice@example.com>"]
    )
    def test_bad_recipient_is_permanent(self, to: str) -> None:
        smtp = SmtpDelivery("smtp://127.0.0.1:1", "no-reply@bank.example")
        with pytest.raises(PermanentDeliveryError) as raised:
            smtp.send_email(to, "subject", BODY)
        assert "alice" not in str(raised.value)

    def test_sms_and_calls_are_refused_for_good(self) -> None:
        smtp = SmtpDelivery("smtp://127.0.0.1:1", "no-reply@bank.example")
        with pytest.raises(PermanentDeliveryError):
            smtp.send_sms(TO, BODY)
        with pytest.raises(PermanentDeliveryError):
            smtp.place_call(TO, CALL_URL)


# --------------------------------------------------------------------------------------------
# Message texts
# --------------------------------------------------------------------------------------------


class TestTexts:
    def test_sms_text(self) -> None:
        text = code_message("Example Bank", CODE, 10)
        assert text == (
            "Example Bank: your verification code is 482915. It expires in 10 minutes. "
            "Never share it; we will never ask you for it."
        )
        assert len(text) <= 160  # one GSM-7 segment

    def test_email_keeps_the_code_out_of_the_subject(self) -> None:
        subject, body = code_email("Example Bank", CODE, 10)
        assert CODE not in subject
        assert "Example Bank" in subject
        assert CODE in body
        assert "10 minutes" in body
        assert "Never share" in body
        assert "never ask" in body
