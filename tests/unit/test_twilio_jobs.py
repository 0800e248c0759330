"""The worker's jobs with the Twilio backends, checked at the HTTP boundary of the `twilio` client.

Nothing of ours is mocked: `TwilioHttpClient.request` (the transport `make_client` builds) is
replaced by a recorder that answers with Twilio-shaped JSON, so the jobs run for real (rq's
SimpleWorker on fakeredis, settings from the environment) through the real `twilio` client, and
the web side checks what they left behind with the runtime a real app builds. SECURITY.md 8-14, 26.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from twilio.request_validator import RequestValidator

from ivr.auth import codes
from ivr.errors import SettingsError
from ivr.flows.engine import CallerInput, CallState, Enqueue, Say
from ivr.outbox import Outbox
from ivr.processes import QUEUE
from ivr.runtime import Runtime
from ivr.settings import ENV_NAMES
from ivr.store.codes import VERIFY_MARK, CallbackRef, CallbackRefs, CodeStore
from ivr.store.counters import FailureCounter
from ivr.twilio_api import CHECK_TIMEOUT, HTTP_TIMEOUT
from tests.conftest import ALICE, BOB, CODE_KEY, TOKEN, enrol, make_app, redis_contents, run_jobs
from tests.support import TwilioHttp, TwilioSent, queued, runtime_of

# SIDs without long digit runs, so a 6-digit code can only be found in Redis if it is there.
ACCOUNT_SID = "AC" + "a1b2c3d4e5f6a7b8" * 2
SERVICE_SID = "VA" + "0f1e2d3c4b5a6f7e" * 2
# The shipped flow sends no email codes (NIST SP 800-63B rev 4); this one does.
EMAIL_FLOW = {"flows_dir": Path(__file__).resolve().parents[1] / "flows", "flow": "email"}
SID_A = "CA" + "ab" * 16  # the call that asks
CALLBACK_SID = "CA" + "9f" * 16  # the call Twilio places back
SMS_FROM = "+15005550006"
CALLER_ID = "+15005550001"
CALLER = "+14155550142"  # the call comes from a number on file for nobody
PUBLIC_URL = "https://ivr.example.com"
CODE_IN_SMS = re.compile(r"your verification code is ([0-9]+)\.")

API = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}"
VERIFY = f"https://verify.twilio.com/v2/Services/{SERVICE_SID}"

#: Settings by field name; each is set in the worker's environment AND given to the app.
TWILIO: dict[str, str] = {"twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": TOKEN}
SMS_TWILIO = TWILIO | {"sms_backend": "twilio", "sms_from": SMS_FROM}
SMS_VERIFY = TWILIO | {"sms_backend": "verify", "verify_service_sid": SERVICE_SID}
EMAIL_VERIFY = TWILIO | {"email_backend": "verify", "verify_service_sid": SERVICE_SID}
CALL_TWILIO = TWILIO | {"call_backend": "twilio", "caller_id": CALLER_ID, "public_url": PUBLIC_URL}

MESSAGE_OK = (201, {"sid": "SM" + "1f" * 16, "status": "queued"})
VERIFICATION_OK = (201, {"sid": "VE" + "3e" * 16, "status": "pending", "channel": "sms"})
CALL_OK = (201, {"sid": CALLBACK_SID, "status": "queued"})


def check_answer(status: str) -> tuple[int, Any]:
    return 200, {"sid": "VE" + "3e" * 16, "status": status, "valid": status == "approved"}


def twilio_error(code: int, status: int, message: str = "Something went wrong.") -> tuple[int, Any]:
    """An error response shaped like Twilio's JSON errors."""
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


# -- the HTTP boundary -----------------------------------------------------------------------


@pytest.fixture
def twilio(monkeypatch: pytest.MonkeyPatch) -> TwilioHttp:
    return TwilioHttp().install(monkeypatch)


# -- the IVR on both sides -------------------------------------------------------------------


@pytest.fixture
def ivr(redis: Any, worker_env: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Flask]:
    """`ivr(**fields)`: put the settings in the worker's environment, build the web app with the
    same settings, enrol Alice and Bob; returns the app."""

    def make(**fields: str) -> Flask:
        for name, value in fields.items():
            monkeypatch.setenv(ENV_NAMES[name], value)
        app = make_app(redis, outbox=worker_env, **fields)
        rt = runtime_of(app)
        enrol(rt, ALICE)
        enrol(rt, BOB)
        return app

    return make


def asking(step: str = "sms_code", **changes: Any) -> CallState:
    """Alice's call, after her PIN, from a phone that is not hers."""
    fields: dict[str, Any] = {
        "call_sid": SID_A,
        "caller": CALLER,
        "step": step,
        "seq": 3,
        "account": ALICE.account,
        "proofs": ["pin"],
    }
    return CallState(**(fields | changes))


def ask_code(rt: Runtime, method: str = "sms_otp") -> CallState:
    """Ask for a code as the IVR does (nothing runs yet): returns the call's state."""
    state = asking("sms_code" if method == "sms_otp" else "email_code")
    assert rt.possession.request_code(state, method) == "queued"
    return state


def scheduled(redis: Any) -> ScheduledJobRegistry:
    return ScheduledJobRegistry(queue=Queue(QUEUE, connection=redis))


def code_in(sent: TwilioSent) -> str:
    found = CODE_IN_SMS.search(str(sent.data.get("Body", "")))
    assert found, sent.data
    return found.group(1)


def assert_not_in_redis(redis: Any, code: str) -> None:
    found = re.search(rb"(?<![0-9])" + code.encode() + rb"(?![0-9])", redis_contents(redis))
    assert found is None, f"code {code} found in Redis"


def delivery(redis: Any, method: str = "sms_otp") -> str | None:
    return CodeStore(redis).delivery(SID_A, method)


def deliveries(rt: Runtime) -> list[dict[str, Any]]:
    """The audited delivery events, oldest first."""
    return [e for e in reversed(rt.audit.recent(1000)) if e["event"] == "delivery"]


def alice(rt: Runtime) -> Any:
    found = rt.customers.get(ALICE.account)
    assert found is not None
    return found


# -- send_code through Twilio Programmable Messaging -----------------------------------------


class TestSendCodeBySms:
    def test_texts_the_phone_on_file_a_code_the_ivr_accepts(
        self, ivr: Callable[..., Flask], twilio: TwilioHttp, redis: Any, worker_env: Path
    ) -> None:
        rt = runtime_of(ivr(**SMS_TWILIO))
        twilio.answer(MESSAGE_OK)
        state = ask_code(rt)
        assert run_jobs(redis)

        sent = twilio.only
        assert sent.method == "POST"
        assert sent.url == f"{API}/Messages.json"
        assert sent.auth == (ACCOUNT_SID, TOKEN)
        assert sent.client_timeout == HTTP_TIMEOUT  # the client make_client builds
        assert set(sent.data) == {"To", "From", "Body"}
        assert sent.data["To"] == ALICE.phone  # the number on file, not the one that called
        assert sent.data["From"] == SMS_FROM
        code = code_in(sent)
        assert re.fullmatch(r"[0-9]{6}", code)

        assert Outbox(worker_env).messages() == []  # it went to Twilio, not the outbox
        assert delivery(redis) == "sent"
        assert [e["outcome"] for e in deliveries(rt)] == ["send_requested", "sent"]
        assert_not_in_redis(redis, code)
        stored = CodeStore(redis).otp(SID_A, "sms_otp")
        assert isinstance(stored, codes.IssuedCode)
        bound = codes.otp_purpose(SID_A, "sms_otp", ALICE.account, ALICE.phone)
        assert stored.digest == codes.digest(CODE_KEY, bound, code)

        # the caller keys it in: the IVR accepts it and connects them to card services
        actions = rt.engine.answer(state, CallerInput(digits=code))
        assert Enqueue("cards_queue", "card-services") in actions
        assert state.proofs == ["pin", "sms_otp"]
        assert not rt.possession.check_code(state, "sms_otp", alice(rt), code)  # used once

    def test_an_invalid_number_fails_at_once_and_voids_the_code(
        self, ivr: Callable[..., Flask], twilio: TwilioHttp, redis: Any
    ) -> None:
        rt = runtime_of(ivr(**SMS_TWILIO))
        # Twilio's own text quotes the number: none of it may reach the audit or Redis
        twilio.answer(
            twilio_error(21211, 400, f"The 'To' number {ALICE.phone} is not a valid phone number.")
        )
        state = ask_code(rt)
        [job] = queued(redis)
        run_jobs(redis)

        sent = twilio.only  # one attempt, no retry
        code = code_in(sent)
        assert delivery(redis) == "failed"
        assert CodeStore(redis).otp(SID_A, "sms_otp") is None
        assert not rt.possession.check_code(state, "sms_otp", alice(rt), code)
        # not retried: neither scheduled nor kept as failed (it finished, result_ttl 0)
        assert scheduled(redis).count == 0
        assert Queue(QUEUE, connection=redis).failed_job_registry.count == 0
        assert not Job.exists(job.id, connection=redis)

        failed = deliveries(rt)[-1]
        assert (failed["outcome"], failed["method"], failed["account"]) == (
            "failed",
            "sms_otp",
            ALICE.account,
        )
        assert "21211" in failed["detail"]
        text = json.dumps(failed)
        for secret in (ALICE.phone, str(sent.data["Body"]), code):
            assert secret not in text
        assert_not_in_redis(redis, code)

    def test_a_server_error_is_retried_then_fails_and_voids(
        self, ivr: Callable[..., Flask], twilio: TwilioHttp, redis: Any
    ) -> None:
        rt = runtime_of(ivr(**SMS_TWILIO))
        twilio.answer(*[twilio_error(20500, 500)] * 5)
        ask_code(rt)
        [job] = queued(redis)
        retries = job.retries_left
        assert retries is not None and retries >= 1
        queue = Queue(QUEUE, connection=redis)

        run_jobs(redis)
        job.refresh()
        assert job.get_status() == "scheduled"  # rq will retry it
        assert job.retries_left == retries - 1
        assert job.id in scheduled(redis).get_job_ids()
        assert delivery(redis) == "pending"  # the caller keeps holding meanwhile
        assert len(twilio.sent) == 1

        # let each retry come due now (rather than after its interval) until none is left
        while job.get_status() == "scheduled":
            scheduled(redis).remove(job)
            queue.enqueue_job(job)
            run_jobs(redis)
            job.refresh()

        assert job.get_status() == "failed"
        assert len(twilio.sent) == retries + 1  # every attempt reached Twilio exactly once
        assert len(twilio.answers) == 5 - (retries + 1)
        assert delivery(redis) == "failed"
        assert CodeStore(redis).otp(SID_A, "sms_otp") is None
        failed = deliveries(rt)[-1]
        assert failed["outcome"] == "failed"
        assert "20500" in failed["detail"]
        for sent in twilio.sent:
            assert sent.data["To"] == ALICE.phone
            code = code_in(sent)
            assert_not_in_redis(redis, code)  # nor in the traceback rq keeps for the failed job
            assert code not in json.dumps(failed)


# -- send_code through Twilio Verify, and the IVR's check --------------------------------------


class TestSendCodeByVerify:
    @pytest.mark.parametrize(
        ("fields", "method", "channel", "to"),
        [
            (SMS_VERIFY, "sms_otp", "sms", ALICE.phone),
            (EMAIL_VERIFY, "email_otp", "email", ALICE.email),
        ],
        ids=["sms", "email"],
    )
    def test_starts_a_verification_to_the_destination_on_file(
        self,
        ivr: Callable[..., Flask],
        twilio: TwilioHttp,
        redis: Any,
        worker_env: Path,
        fields: dict[str, str],
        method: str,
        channel: str,
        to: str,
    ) -> None:
        rt = runtime_of(ivr(**fields))
        twilio.answer(VERIFICATION_OK)
        ask_code(rt, method)
        run_jobs(redis)

        sent = twilio.only
        assert sent.method == "POST"
        assert sent.url == f"{VERIFY}/Verifications"
        assert sent.data == {"To": to, "Channel": channel}
        assert sent.auth == (ACCOUNT_SID, TOKEN)
        assert sent.client_timeout == HTTP_TIMEOUT
        # Twilio makes the code: none of ours is made, stored or sent
        assert Outbox(worker_env).messages() == []
        assert CodeStore(redis).otp(SID_A, method) == VERIFY_MARK
        assert delivery(redis, method) == "sent"
        assert [e["outcome"] for e in deliveries(rt)] == ["send_requested", "sent"]

    def test_a_refused_start_fails_at_once(
        self, ivr: Callable[..., Flask], twilio: TwilioHttp, redis: Any
    ) -> None:
        rt = runtime_of(ivr(**SMS_VERIFY))
        twilio.answer(twilio_error(60203, 429, f"Max send attempts reached for {ALICE.phone}"))
        ask_code(rt)
        run_jobs(redis)
        assert len(twilio.sent) == 1  # 60203 comes as 429 but is permanent: no retry
        assert scheduled(redis).count == 0
        assert delivery(redis) == "failed"
        assert CodeStore(redis).otp(SID_A, "sms_otp") is None
        failed = deliveries(rt)[-1]
        assert failed["outcome"] == "failed"
        assert ALICE.phone not in json.dumps(failed)


@pytest.fixture
def verified(
    ivr: Callable[..., Flask], twilio: TwilioHttp, redis: Any
) -> tuple[Runtime, CallState]:
    """Alice's call, after the worker started a Verify SMS to her phone."""
    rt = runtime_of(ivr(**SMS_VERIFY))
    twilio.answer(VERIFICATION_OK)
    state = ask_code(rt)
    run_jobs(redis)
    assert CodeStore(redis).otp(SID_A, "sms_otp") == VERIFY_MARK
    twilio.sent.clear()
    return rt, state


class TestVerifyCheck:
    @pytest.mark.parametrize(
        ("answer", "accepted"),
        [
            (check_answer("approved"), True),
            (check_answer("pending"), False),  # a wrong code
            (twilio_error(20404, 404), False),  # no pending verification
            (twilio_error(60202, 429), False),  # max check attempts reached
        ],
        ids=["approved", "pending", "404", "60202"],
    )
    def test_twilio_decides(
        self,
        verified: tuple[Runtime, CallState],
        twilio: TwilioHttp,
        redis: Any,
        answer: tuple[int, Any],
        accepted: bool,
    ) -> None:
        rt, state = verified
        twilio.answer(answer)
        assert rt.possession.check_code(state, "sms_otp", alice(rt), "123456") is accepted
        sent = twilio.only
        assert sent.method == "POST"
        assert sent.url == f"{VERIFY}/VerificationCheck"
        assert sent.data == {"To": ALICE.phone, "Code": "123456"}  # the phone on file
        assert sent.auth == (ACCOUNT_SID, TOKEN)
        assert sent.client_timeout == CHECK_TIMEOUT  # checked while the caller waits
        # approved: the mark is used up; otherwise it stays for another try
        expected_mark = None if accepted else VERIFY_MARK
        assert CodeStore(redis).otp(SID_A, "sms_otp") == expected_mark

    @pytest.mark.parametrize("typed", ["12", "12345678901", "1234a6"])
    def test_something_that_is_not_a_code_is_a_failure_without_asking_twilio(
        self, verified: tuple[Runtime, CallState], twilio: TwilioHttp, redis: Any, typed: str
    ) -> None:
        rt, state = verified
        actions = rt.engine.answer(state, CallerInput(digits=typed))
        assert twilio.sent == []
        assert state.failures == 1
        assert FailureCounter(redis).count(ALICE.account, "sms_otp") == 1
        assert next(a.text for a in actions if isinstance(a, Say)).startswith("That code did not")

    def test_verify_down_is_unavailable_not_a_failure(
        self, verified: tuple[Runtime, CallState], twilio: TwilioHttp, redis: Any
    ) -> None:
        """Fail closed without blaming the caller: another method, nothing counted."""
        rt, state = verified
        twilio.answer(twilio_error(20500, 500))
        actions = rt.engine.answer(state, CallerInput(digits="123456"))
        assert next(a.text for a in actions if isinstance(a, Say)).startswith("Sorry, we cannot")
        assert not any(isinstance(a, Enqueue) for a in actions)
        assert state.step == "card_check"
        assert state.failures == 0
        assert FailureCounter(redis).count(ALICE.account, "sms_otp") == 0
        # told the text "cannot" be used: that verification is void on our side (SECURITY 26)
        assert CodeStore(redis).otp(SID_A, "sms_otp") is None

    def test_an_approved_code_keyed_in_reaches_card_services(
        self, verified: tuple[Runtime, CallState], twilio: TwilioHttp
    ) -> None:
        rt, state = verified
        twilio.answer(check_answer("approved"))
        actions = rt.engine.answer(state, CallerInput(digits="123456"))
        assert Enqueue("cards_queue", "card-services") in actions
        assert state.proofs == ["pin", "sms_otp"]
        assert twilio.only.data == {"To": ALICE.phone, "Code": "123456"}

    def test_a_pending_code_keyed_in_is_a_failure(
        self, verified: tuple[Runtime, CallState], twilio: TwilioHttp
    ) -> None:
        rt, state = verified
        twilio.answer(check_answer("pending"))
        actions = rt.engine.answer(state, CallerInput(digits="654321"))
        assert not any(isinstance(a, Enqueue) for a in actions)
        assert state.proofs == ["pin"]
        assert state.failures == 1


# -- place_callback through Twilio Programmable Voice ----------------------------------------


class TestPlaceCallback:
    @pytest.mark.parametrize("public_url", [PUBLIC_URL, PUBLIC_URL + "/"], ids=["bare", "slash"])
    def test_calls_the_phone_on_file_and_keys_the_claim_by_twilios_call_sid(
        self,
        ivr: Callable[..., Flask],
        twilio: TwilioHttp,
        redis: Any,
        public_url: str,
    ) -> None:
        rt = runtime_of(ivr(**CALL_TWILIO | {"public_url": public_url}))
        twilio.answer(CALL_OK)
        state = asking("call_back", seq=5, failures=1)
        assert rt.possession.request_callback(state, "call_back") == "queued"
        run_jobs(redis)

        sent = twilio.only
        assert sent.method == "POST"
        assert sent.url == f"{API}/Calls.json"
        assert sent.auth == (ACCOUNT_SID, TOKEN)
        assert sent.client_timeout == HTTP_TIMEOUT
        assert sent.data == {
            "To": ALICE.phone,  # the number on file, not the one that called
            "From": CALLER_ID,
            "Url": "https://ivr.example.com/voice/callback",
            "Method": "POST",
        }
        assert CallbackRefs(redis).take(SID_A) is None  # not under the asking call's sid
        ref = CallbackRefs(redis).take(CALLBACK_SID)
        assert ref == CallbackRef(SID_A, CALLER, ALICE.account, ["pin"], 1, "call_back")
        sent_event = deliveries(rt)[-1]
        assert (sent_event["method"], sent_event["outcome"]) == ("callback", "sent")
        assert sent_event["detail"] == CALLBACK_SID

    def test_twilio_requesting_that_url_resumes_the_call(
        self, ivr: Callable[..., Flask], twilio: TwilioHttp, redis: Any
    ) -> None:
        """The Url given to Twilio is one the app serves and whose signature it accepts."""
        app = ivr(**CALL_TWILIO)
        twilio.answer(CALL_OK)
        runtime_of(app).possession.request_callback(asking("call_back"), "call_back")
        run_jobs(redis)
        url = str(twilio.only.data["Url"])
        params = {
            "CallSid": CALLBACK_SID,
            "AccountSid": ACCOUNT_SID,
            "From": CALLER_ID,
            "To": ALICE.phone,
            "Direction": "outbound-api",
        }
        signature = RequestValidator(TOKEN).compute_signature(url, params)
        response = app.test_client().post(
            "/voice/callback", data=params, headers={"X-Twilio-Signature": signature}
        )
        assert response.status_code == 200
        assert "returning your call about your card" in response.get_data(as_text=True)

    def test_an_invalid_number_is_not_retried(
        self, ivr: Callable[..., Flask], twilio: TwilioHttp, redis: Any
    ) -> None:
        rt = runtime_of(ivr(**CALL_TWILIO))
        twilio.answer(twilio_error(21211, 400, f"The 'To' number {ALICE.phone} is invalid."))
        rt.possession.request_callback(asking("call_back"), "call_back")
        run_jobs(redis)
        assert len(twilio.sent) == 1
        assert scheduled(redis).count == 0
        assert CallbackRefs(redis).take(CALLBACK_SID) is None
        failed = deliveries(rt)[-1]
        assert (failed["method"], failed["outcome"]) == ("callback", "failed")
        assert ALICE.phone not in json.dumps(failed)

    def test_a_server_error_is_retried(
        self, ivr: Callable[..., Flask], twilio: TwilioHttp, redis: Any
    ) -> None:
        rt = runtime_of(ivr(**CALL_TWILIO))
        twilio.answer(twilio_error(20500, 500))
        rt.possession.request_callback(asking("call_back"), "call_back")
        [job] = queued(redis)
        retries = job.retries_left
        assert retries
        run_jobs(redis)
        job.refresh()
        assert job.get_status() == "scheduled"
        assert job.retries_left == retries - 1
        assert deliveries(rt)[-1]["outcome"] == "send_requested"  # not failed yet


# -- start-up refuses settings the flow cannot be delivered with -----------------------------


class TestStartUp:
    @pytest.mark.parametrize(
        "fields",
        [SMS_TWILIO | CALL_TWILIO, SMS_VERIFY | EMAIL_VERIFY | CALL_TWILIO],
        ids=["messaging", "verify"],
    )
    def test_complete_settings_start_and_send_nothing(
        self, redis: Any, worker_env: Path, twilio: TwilioHttp, fields: dict[str, str]
    ) -> None:
        """The refusals below are for the one missing variable, nothing else."""
        rt = runtime_of(make_app(redis, outbox=worker_env, **fields))
        assert rt.settings.call_backend == "twilio"
        backends = {"sms_otp": "sms_backend", "email_otp": "email_backend"}
        verify = {m for m, field in backends.items() if fields.get(field) == "verify"}
        assert set(rt.possession.verify) == verify
        assert twilio.sent == []

    @pytest.mark.parametrize(
        ("overrides", "variable"),
        [
            (TWILIO | {"sms_backend": "verify"}, "TWILIO_VERIFY_SERVICE_SID"),
            (TWILIO | EMAIL_FLOW | {"email_backend": "verify"}, "TWILIO_VERIFY_SERVICE_SID"),
            (CALL_TWILIO | {"public_url": None}, "IVR_PUBLIC_URL"),
            (CALL_TWILIO | {"caller_id": None}, "IVR_CALLER_ID"),
            ({"code_key": None}, "IVR_CODE_KEY"),
            # service codes still need the key when Twilio Verify makes the one-time codes
            (SMS_VERIFY | EMAIL_VERIFY | {"code_key": None}, "IVR_CODE_KEY"),
            (SMS_TWILIO | {"sms_from": None}, "IVR_SMS_FROM"),
            (SMS_TWILIO | {"twilio_account_sid": None}, "TWILIO_ACCOUNT_SID"),
            (EMAIL_FLOW | {"email_backend": "smtp", "email_from": "a@b.example"}, "IVR_SMTP_URL"),
            (
                EMAIL_FLOW | {"email_backend": "smtp", "smtp_url": "smtp://[::1]:25"},
                "IVR_EMAIL_FROM",
            ),
        ],
        ids=[
            "sms_verify_without_service",
            "email_verify_without_service",
            "call_without_public_url",
            "call_without_caller_id",
            "codes_without_key",
            "service_codes_without_key",
            "sms_twilio_without_sender",
            "sms_twilio_without_account",
            "email_smtp_without_server",
            "email_smtp_without_sender",
        ],
    )
    def test_refuses_to_start_naming_the_variable(
        self, redis: Any, worker_env: Path, overrides: dict[str, Any], variable: str
    ) -> None:
        with pytest.raises(SettingsError) as raised:
            make_app(redis, outbox=worker_env, **overrides)
        assert str(raised.value).startswith(f"{variable}:")
