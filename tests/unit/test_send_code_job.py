"""The worker's send_code job, run for real on fakeredis and delivering to the outbox."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rq import Queue

import workers.jobs as jobs
from ivr.auth import codes
from ivr.errors import SettingsError
from ivr.flows.engine import CallState
from ivr.outbox import OutboxMessage
from ivr.processes import QUEUE
from ivr.runtime import Runtime
from ivr.store.codes import CodeStore
from ivr.twilio_api import PermanentDeliveryError, TransientDeliveryError
from tests.conftest import (
    ALICE,
    BOB,
    CODE_KEY,
    DemoCustomer,
    possession_with,
    run_jobs,
    state,
)
from tests.support import (
    SID_A,
    UNKNOWN_ACCOUNT,
    assert_not_in_redis,
    audit_outcomes,
    delivery,
    outbox,
    queued,
    redis_contents,
)

CODE_IN_SMS = re.compile(r"your verification code is ([0-9]+)\.")


def code_in_text(body: str) -> str:
    """The code in an SMS text or in the body of the code email."""
    found = CODE_IN_SMS.search(body) or re.search(r"\n {4}([0-9]+)\n", body)
    assert found, body
    return found.group(1)


def code_in(message: OutboxMessage) -> str:
    return code_in_text(message.body)


class FakeDelivery:
    """A provider that receives the message (so the test sees the code), then fails as told."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.bodies: list[str] = []

    def send_sms(self, to: str, body: str) -> None:
        self.bodies.append(body)
        if self.failure is not None:
            raise self.failure

    def send_email(self, to: str, subject: str, body: str) -> None:
        self.send_sms(to, body)

    def place_call(self, to: str, url: str) -> str:  # pragma: no cover - not used here
        raise AssertionError("no calls expected")


@pytest.fixture
def send(
    redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer], worker_env: Path
) -> Callable[..., CallState]:
    """Ask for a code as the IVR does, then let the worker run: returns the call's state."""

    def ask(method: str = "sms_otp", account: str = ALICE.account, **options: Any) -> CallState:
        asked = replace(state(account=account), **options)
        assert runtime.possession.request_code(asked, method) == "queued"
        run_jobs(redis)
        return asked

    return ask


class TestSendCodeJob:
    def test_texts_a_code_to_the_phone_on_file(
        self, redis: Any, runtime: Runtime, send: Callable[..., CallState], worker_env: Path
    ) -> None:
        send(caller=BOB.phone)  # called from someone else's phone: still sent to Alice's
        assert BOB.phone not in {m.to for m in outbox(worker_env)}
        [message] = outbox(worker_env)
        assert (message.channel, message.to) == ("sms", ALICE.phone)
        code = code_in(message)
        assert re.fullmatch(r"[0-9]{6}", code)
        assert delivery(redis) == "sent"
        assert audit_outcomes(runtime) == ["send_requested", "sent"]
        alice = runtime.customers.get(ALICE.account)
        assert runtime.possession.check_code(state(), "sms_otp", alice, code)

    def test_a_late_job_never_touches_a_newer_send(
        self,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The caller held, was told the text could not be sent, and asked again: the first
        job, finishing late, must neither void the new code nor replace it."""
        runtime.possession.request_code(state(seq=3), "sms_otp")
        [late] = queued(redis)
        Queue(QUEUE, connection=redis).remove(late)  # it is stuck somewhere, for now
        runtime.possession.request_code(state(seq=7), "sms_otp")
        run_jobs(redis)
        [message] = outbox(worker_env)
        code = code_in(message)
        # the late job now runs, and its provider refuses for good
        monkeypatch.setenv("IVR_SMS_BACKEND", "twilio")  # without IVR_SMS_FROM: a permanent error
        Queue(QUEUE, connection=redis).enqueue_job(late)
        run_jobs(redis)
        assert delivery(redis) == "sent"
        assert len(outbox(worker_env)) == 1
        alice = runtime.customers.get(ALICE.account)
        assert runtime.possession.check_code(state(seq=8), "sms_otp", alice, code)

    def test_a_late_job_that_succeeds_sends_nothing(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer], worker_env: Path
    ) -> None:
        runtime.possession.request_code(state(seq=3), "sms_otp")
        [late] = queued(redis)
        Queue(QUEUE, connection=redis).remove(late)
        runtime.possession.request_code(state(seq=7), "sms_otp")
        run_jobs(redis)
        code = code_in(outbox(worker_env)[0])
        Queue(QUEUE, connection=redis).enqueue_job(late)
        run_jobs(redis)
        assert len(outbox(worker_env)) == 1  # the superseded send sent nothing
        alice = runtime.customers.get(ALICE.account)
        assert runtime.possession.check_code(state(seq=8), "sms_otp", alice, code)

    def test_emails_a_code_to_the_address_on_file(
        self, redis: Any, runtime: Runtime, send: Callable[..., CallState], worker_env: Path
    ) -> None:
        send("email_otp")
        [message] = outbox(worker_env)
        assert (message.channel, message.to) == ("email", ALICE.email)
        code = code_in(message)
        assert message.subject is not None and code not in message.subject
        assert delivery(redis, method="email_otp") == "sent"
        alice = runtime.customers.get(ALICE.account)
        assert not runtime.possession.check_code(state(), "sms_otp", alice, code)
        assert runtime.possession.check_code(state(), "email_otp", alice, code)

    def test_the_code_is_never_in_redis_or_logs(
        self,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        runtime.possession.request_code(state(), "sms_otp")
        run_jobs(redis, logging_level="DEBUG")
        code = code_in(outbox(worker_env)[0])
        assert_not_in_redis(redis, code)
        assert f"code-{SID_A}-sms_otp-0" in caplog.text  # rq did log the job...
        assert code not in caplog.text  # ...but not the code
        stored = CodeStore(redis).otp(SID_A, "sms_otp")
        assert isinstance(stored, codes.IssuedCode)
        assert stored.digest.encode() in redis_contents(redis)  # the scan does see the store

    def test_expires_ten_minutes_after_it_was_made(
        self,
        redis: Any,
        runtime: Runtime,
        send: Callable[..., CallState],
        worker_env: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        made = time.time()
        monkeypatch.setattr(jobs, "time", SimpleNamespace(time=lambda: made))
        send()
        code = code_in(outbox(worker_env)[0])
        alice = runtime.customers.get(ALICE.account)
        at = [made + 601]
        later = possession_with(redis, runtime.customers, at, key=CODE_KEY)
        assert not later.check_code(state(), "sms_otp", alice, code)
        at[0] = made + 599
        assert later.check_code(state(), "sms_otp", alice, code)

    def test_unknown_account_sounds_sent_and_sends_nothing(
        self, redis: Any, send: Callable[..., CallState], worker_env: Path
    ) -> None:
        send(account=UNKNOWN_ACCOUNT)
        assert outbox(worker_env) == []
        assert delivery(redis) == "sent"
        assert CodeStore(redis).otp(SID_A, "sms_otp") is None

    def test_no_email_on_file_sends_nothing(
        self, redis: Any, runtime: Runtime, send: Callable[..., CallState], worker_env: Path
    ) -> None:
        runtime.customers.update(ALICE.account, email=None)
        send("email_otp")
        assert outbox(worker_env) == []
        assert delivery(redis, method="email_otp") == "sent"
        assert CodeStore(redis).otp(SID_A, "email_otp") is None

    def test_missing_sms_sender_fails_and_voids(
        self,
        redis: Any,
        runtime: Runtime,
        send: Callable[..., CallState],
        worker_env: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("IVR_SMS_BACKEND", "twilio")  # and no IVR_SMS_FROM
        send()
        assert outbox(worker_env) == []
        assert delivery(redis) == "failed"
        assert CodeStore(redis).otp(SID_A, "sms_otp") is None
        assert audit_outcomes(runtime)[-1] == "failed"
        assert Queue(QUEUE, connection=redis).failed_job_registry.count == 0  # not retried

    def test_permanent_provider_failure_fails_and_voids(
        self,
        redis: Any,
        runtime: Runtime,
        send: Callable[..., CallState],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        provider = FakeDelivery(PermanentDeliveryError("SMS send failed: Twilio error 21614"))
        monkeypatch.setattr(jobs, "delivery_for", lambda settings, channel: provider)
        send()
        [body] = provider.bodies
        code = code_in_text(body)
        assert delivery(redis) == "failed"
        alice = runtime.customers.get(ALICE.account)
        assert not runtime.possession.check_code(state(), "sms_otp", alice, code)
        assert_not_in_redis(redis, code)

    def test_settings_error_from_the_provider_fails_and_voids(
        self,
        redis: Any,
        runtime: Runtime,
        send: Callable[..., CallState],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        provider = FakeDelivery(SettingsError("IVR_SMS_FROM: required to send SMS through Twilio"))
        monkeypatch.setattr(jobs, "delivery_for", lambda settings, channel: provider)
        send()
        assert delivery(redis) == "failed"
        assert CodeStore(redis).otp(SID_A, "sms_otp") is None

    def test_transient_failure_is_retried_then_fails_and_voids(
        self,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        provider = FakeDelivery(TransientDeliveryError("SMS send failed: network error (X)"))
        monkeypatch.setattr(jobs, "delivery_for", lambda settings, channel: provider)
        runtime.possession.request_code(state(), "sms_otp")
        [job] = queued(redis)
        run_jobs(redis, logging_level="DEBUG")
        job.refresh()
        assert job.get_status() == "scheduled"  # rq retries it later
        assert delivery(redis) == "pending"  # the caller keeps holding meanwhile
        # the last attempt fails too
        job.retries_left = 0
        job.save()
        Queue(QUEUE, connection=redis).enqueue_job(job)
        run_jobs(redis, logging_level="DEBUG")
        job.refresh()
        assert job.get_status() == "failed"
        assert delivery(redis) == "failed"
        assert CodeStore(redis).otp(SID_A, "sms_otp") is None
        assert len(provider.bodies) == 2
        assert "TransientDeliveryError" in caplog.text
        for body in provider.bodies:  # not in the stored traceback, nor in the logs
            code = code_in_text(body)
            assert_not_in_redis(redis, code)
            assert code not in caplog.text

    @pytest.mark.parametrize("age", [600, 601, 3600])
    def test_a_job_older_than_the_code_never_delivers(
        self,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
        monkeypatch: pytest.MonkeyPatch,
        age: int,
    ) -> None:
        runtime.possession.request_code(state(), "sms_otp")
        late = time.time() + age  # the job runs `age` seconds after it was asked for
        monkeypatch.setattr(jobs, "time", SimpleNamespace(time=lambda: late))
        run_jobs(redis)
        assert outbox(worker_env) == []
        assert delivery(redis) == "failed"
        assert CodeStore(redis).otp(SID_A, "sms_otp") is None
