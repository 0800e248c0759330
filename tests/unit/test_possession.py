"""Possession factors without a phone call: one-time codes, service codes, send caps, the jobs.

Codes are checked against a controlled clock (`Possession(..., clock=...)`); the worker's jobs
run for real in this process (`run_jobs`: rq's SimpleWorker on fakeredis) with their settings
from the environment (`worker_env`), delivering to the development outbox. SECURITY.md 8-14, 26.
"""

from __future__ import annotations

import json
import logging
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis as redis_lib
from flask.testing import FlaskClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.job import Job

import workers.jobs as jobs
from ivr.auth import codes
from ivr.auth.possession import (
    PLACE_CALLBACK_JOB,
    SEND_CODE_JOB,
    CodePolicy,
    Possession,
    destination,
)
from ivr.errors import SettingsError
from ivr.flows.engine import CallState, FactorUnavailable
from ivr.outbox import Outbox, OutboxMessage
from ivr.processes import QUEUE
from ivr.runtime import Runtime
from ivr.store import keys
from ivr.store.audit import AuditLog
from ivr.store.codes import VERIFY_MARK, CallbackRef, CallbackRefs, CodeStore
from ivr.store.customers import Customer, RedisCustomerDirectory
from ivr.store.send_caps import SendLimiter, SendLimits
from ivr.twilio_api import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from tests.conftest import (
    ALICE,
    API_TOKEN,
    BOB,
    CODE_KEY,
    DemoCustomer,
    make_app,
    run_jobs,
)
from tests.support import assert_not_in_redis, lax_abuse_guard, redis_contents

KEY = "k" * 32
T0 = 1_800_000_000.0
TEN_MINUTES = 600
DAY = 86_400
# CallSids without digit runs, so a 6-digit code can only be found in Redis if it is there.
SID_A = "CA" + "ab" * 16
SID_B = "CA" + "cd" * 16
CALLER = "+15005550006"  # calls from a number that is not on file for anyone
UNKNOWN_ACCOUNT = "99999999"
CODE_IN_SMS = re.compile(r"your verification code is ([0-9]+)\.")
LIMITS = SendLimits(account=5, destination=5, prefix=200, window=600, per_call=3, call_window=3600)


# -- helpers ---------------------------------------------------------------------------------


def customer(who: DemoCustomer, **changes: Any) -> Customer:
    fields = {"account": who.account, "phone": who.phone, "email": who.email, "name": who.name}
    return Customer(**(fields | changes))


def state(call_sid: str = SID_A, account: str | None = ALICE.account, seq: int = 0) -> CallState:
    return CallState(call_sid=call_sid, caller=CALLER, step="sms_code", seq=seq, account=account)


def alice_purpose(call_sid: str, method: str) -> str:
    """The purpose of a code sent in `call_sid` for Alice's claim, to her destination on file."""
    return codes.otp_purpose(call_sid, method, ALICE.account, destination(customer(ALICE), method))


def issue_otp(redis: Any, call_sid: str, method: str, at: float, key: str = KEY) -> str:
    """What `send_code` stores for a code made at time `at`: only the keyed digest."""
    code = codes.make_code(6)
    digest = codes.digest(key, alice_purpose(call_sid, method), code)
    CodeStore(redis).issue_otp(call_sid, method, codes.IssuedCode(digest, at + TEN_MINUTES), 600)
    return code


def queued(redis: Any) -> list[Job]:
    queue = Queue(QUEUE, connection=redis)
    return [job for job in (queue.fetch_job(i) for i in queue.job_ids) if job is not None]


def outbox(path: Path) -> list[OutboxMessage]:
    return Outbox(path).messages()


def code_in_text(body: str) -> str:
    """The code in an SMS text or in the body of the code email."""
    found = CODE_IN_SMS.search(body) or re.search(r"\n {4}([0-9]+)\n", body)
    assert found, body
    return found.group(1)


def code_in(message: OutboxMessage) -> str:
    return code_in_text(message.body)


def delivery(redis: Any, call_sid: str = SID_A, method: str = "sms_otp") -> str | None:
    return CodeStore(redis).delivery(call_sid, method)


def audit_outcomes(rt: Runtime, event: str = "delivery") -> list[str]:
    return [e.get("outcome", "") for e in reversed(rt.audit.recent(1000)) if e["event"] == event]


class FakeVerify:
    """Twilio Verify's `check`, answering as told and remembering what it was asked."""

    def __init__(self, answer: bool | Exception) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    def check(self, to: str, code: str) -> bool:
        self.asked.append((to, code))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


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


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def directory(redis: Any) -> RedisCustomerDirectory:
    found = RedisCustomerDirectory(redis)
    found.add(customer(ALICE))
    found.add(customer(BOB))
    return found


@pytest.fixture
def now() -> list[float]:
    """The controlled clock: tests move `now[0]`."""
    return [T0]


def possession_with(
    redis: Any,
    directory: RedisCustomerDirectory,
    now: list[float],
    *,
    key: str | None = KEY,
    limits: SendLimits = LIMITS,
    verify: dict[str, Any] | None = None,
) -> Possession:
    policy = CodePolicy(key=key, digits=6, ttl=TEN_MINUTES, service_digits=8, service_ttl=DAY)
    return Possession(
        redis,
        directory,
        policy,
        SendLimiter(redis, limits),
        AuditLog(redis),
        lax_abuse_guard(redis, AuditLog(redis)),
        verify,
        clock=lambda: now[0],
    )


@pytest.fixture
def possession(redis: Any, directory: RedisCustomerDirectory, now: list[float]) -> Possession:
    return possession_with(redis, directory, now)


@pytest.fixture
def alice_on_file(directory: RedisCustomerDirectory) -> Customer:
    found = directory.get(ALICE.account)
    assert found is not None
    return found


# -- codes: pure rules -----------------------------------------------------------------------


class TestMakeCode:
    def test_draws_from_secrets(self, monkeypatch: pytest.MonkeyPatch) -> None:
        asked: list[int] = []

        def randbelow(bound: int) -> int:
            asked.append(bound)
            return 42

        monkeypatch.setattr(codes.secrets, "randbelow", randbelow)
        assert codes.make_code(6) == "000042"  # leading zeros kept
        assert codes.make_code(8) == "00000042"
        assert asked == [10**6, 10**8]  # every code of that length is possible

    def test_largest_draw_is_all_nines(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(codes.secrets, "randbelow", lambda bound: bound - 1)
        assert codes.make_code(6) == "999999"

    @pytest.mark.parametrize("digits", [6, 7, 8, 9, 10])
    def test_has_the_requested_digits(self, digits: int) -> None:
        for _ in range(50):
            code = codes.make_code(digits)
            assert len(code) == digits
            assert re.fullmatch(r"[0-9]+", code)

    @pytest.mark.parametrize("digits", [0, 4, 5, 11])
    def test_fewer_than_six_or_more_than_ten_digits_is_refused(self, digits: int) -> None:
        with pytest.raises(ValueError, match="6 to 10 digits"):
            codes.make_code(digits)

    def test_roughly_uniform(self) -> None:
        drawn = [codes.make_code(6) for _ in range(2000)]
        assert all(len(c) == 6 and c.isdigit() for c in drawn)
        assert len(set(drawn)) > 1950  # ~2 collisions expected among 10**6 values
        for position in range(6):
            counts = Counter(c[position] for c in drawn)
            assert set(counts) == set("0123456789"), position
            # 200 expected per digit; 100..320 is far outside chance for a fair draw
            assert all(100 <= n <= 320 for n in counts.values()), (position, counts)


class TestDigest:
    CODE = "123456"

    def test_is_a_hex_hmac_without_the_code(self) -> None:
        digest = codes.digest(KEY, alice_purpose(SID_A, "sms_otp"), self.CODE)
        assert re.fullmatch(r"[0-9a-f]{64}", digest)
        assert self.CODE not in digest

    def test_binds_the_call(self) -> None:
        a = codes.digest(KEY, alice_purpose(SID_A, "sms_otp"), self.CODE)
        b = codes.digest(KEY, alice_purpose(SID_B, "sms_otp"), self.CODE)
        assert a != b
        assert not codes.matches(KEY, alice_purpose(SID_B, "sms_otp"), self.CODE, a)

    def test_binds_the_method(self) -> None:
        sms = codes.digest(KEY, alice_purpose(SID_A, "sms_otp"), self.CODE)
        email = codes.digest(KEY, alice_purpose(SID_A, "email_otp"), self.CODE)
        assert sms != email
        assert not codes.matches(KEY, alice_purpose(SID_A, "email_otp"), self.CODE, sms)

    def test_binds_the_key(self) -> None:
        purpose = alice_purpose(SID_A, "sms_otp")
        stored = codes.digest(KEY, purpose, self.CODE)
        assert codes.digest("another-key-0123456789", purpose, self.CODE) != stored
        assert not codes.matches("another-key-0123456789", purpose, self.CODE, stored)
        assert codes.matches(KEY, purpose, self.CODE, stored)

    def test_service_codes_and_one_time_codes_do_not_mix(self) -> None:
        service = codes.digest(KEY, codes.service_purpose(ALICE.account), self.CODE)
        assert not codes.matches(KEY, alice_purpose(SID_A, "sms_otp"), self.CODE, service)
        assert not codes.matches(KEY, codes.service_purpose(BOB.account), self.CODE, service)

    @pytest.mark.parametrize(
        "given",
        [
            None,
            "",
            "12345",  # too short
            "12345678901",  # too long
            "12345a",
            " 123456",
            "123456 ",
            "123456\n",
            "123-456",
            "١٢٣٤٥٦",  # Arabic-Indic digits
            "\uff11\uff12\uff13\uff14\uff15\uff16",  # fullwidth digits
        ],
    )
    def test_matches_refuses_malformed_input(self, given: str | None) -> None:
        purpose = alice_purpose(SID_A, "sms_otp")
        # even a digest made of that very input does not let it in
        stored = codes.digest(KEY, purpose, given or "x")
        assert codes.matches(KEY, purpose, given, stored) is False  # type: ignore[arg-type]

    def test_matches_refuses_when_nothing_is_stored(self) -> None:
        assert codes.matches(KEY, alice_purpose(SID_A, "sms_otp"), self.CODE, None) is False

    def test_expiry_is_exclusive(self) -> None:
        issued = codes.IssuedCode("d" * 64, T0 + TEN_MINUTES)
        assert not issued.expired(T0 + TEN_MINUTES - 1)
        assert issued.expired(T0 + TEN_MINUTES)


# -- one-time codes at check time ------------------------------------------------------------


class TestCheckCode:
    @pytest.mark.parametrize(
        ("after", "accepted"),
        [(0, True), (599, True), (601, False), (3600, False)],
        ids=["at_once", "9m59s", "10m01s", "1h"],
    )
    def test_valid_for_ten_minutes(
        self,
        redis: Any,
        possession: Possession,
        alice_on_file: Customer,
        now: list[float],
        after: int,
        accepted: bool,
    ) -> None:
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        now[0] = T0 + after
        assert possession.check_code(state(), "sms_otp", alice_on_file, code) is accepted

    def test_used_once(self, redis: Any, possession: Possession, alice_on_file: Customer) -> None:
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        assert possession.check_code(state(), "sms_otp", alice_on_file, code)
        assert not possession.check_code(state(), "sms_otp", alice_on_file, code)
        assert not redis.exists(keys.otp(SID_A, "sms_otp"))

    def test_bound_to_the_call(
        self, redis: Any, possession: Possession, alice_on_file: Customer
    ) -> None:
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        assert not possession.check_code(state(SID_B), "sms_otp", alice_on_file, code)
        # ...even when call B has a code of its own
        issue_otp(redis, SID_B, "sms_otp", at=T0)
        assert not possession.check_code(state(SID_B), "sms_otp", alice_on_file, code)
        assert possession.check_code(state(SID_A), "sms_otp", alice_on_file, code)

    def test_bound_to_the_method(
        self, redis: Any, possession: Possession, alice_on_file: Customer
    ) -> None:
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        assert not possession.check_code(state(), "email_otp", alice_on_file, code)
        # a digest copied under the other method's key is still bound to its purpose
        sms = CodeStore(redis).otp(SID_A, "sms_otp")
        assert isinstance(sms, codes.IssuedCode)
        CodeStore(redis).issue_otp(SID_A, "email_otp", sms, 600)
        assert not possession.check_code(state(), "email_otp", alice_on_file, code)

    def test_wrong_code_leaves_the_right_one_usable(
        self, redis: Any, possession: Possession, alice_on_file: Customer
    ) -> None:
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        for attempt in (wrong, "", None, "12345", code + "0"):
            assert not possession.check_code(state(), "sms_otp", alice_on_file, attempt)
        assert possession.check_code(state(), "sms_otp", alice_on_file, code)

    def test_no_code_issued_never_matches(
        self, possession: Possession, alice_on_file: Customer
    ) -> None:
        assert not possession.check_code(state(), "sms_otp", alice_on_file, "123456")

    def test_without_a_key_nothing_matches(
        self, redis: Any, directory: RedisCustomerDirectory, now: list[float]
    ) -> None:
        keyless = possession_with(redis, directory, now, key=None)
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        assert not keyless.check_code(state(), "sms_otp", directory.get(ALICE.account), code)

    def test_a_resend_voids_the_earlier_code(
        self, redis: Any, possession: Possession, alice_on_file: Customer
    ) -> None:
        first = issue_otp(redis, SID_A, "sms_otp", at=T0)
        second = issue_otp(redis, SID_A, "sms_otp", at=T0 + 30)
        if first != second:  # one chance in a million they are equal
            assert not possession.check_code(state(), "sms_otp", alice_on_file, first)
        assert possession.check_code(state(), "sms_otp", alice_on_file, second)


class TestTwilioVerifyMark:
    """When Twilio Verify made the code, only its mark is stored and Verify is asked."""

    def mark(self, redis: Any) -> None:
        CodeStore(redis).issue_otp(SID_A, "sms_otp", VERIFY_MARK, 600)

    def test_approved_is_accepted_once(
        self, redis: Any, directory: RedisCustomerDirectory, now: list[float]
    ) -> None:
        fake = FakeVerify(True)
        verified = possession_with(redis, directory, now, verify={"sms_otp": fake})
        self.mark(redis)
        alice = directory.get(ALICE.account)
        assert verified.check_code(state(), "sms_otp", alice, "123456")
        assert fake.asked == [(ALICE.phone, "123456")]  # the number on file, not the caller
        assert not verified.check_code(state(), "sms_otp", alice, "123456")
        assert len(fake.asked) == 1  # the mark is gone: Verify is not even asked again

    def test_not_approved_is_refused_and_the_mark_stays(
        self, redis: Any, directory: RedisCustomerDirectory, now: list[float]
    ) -> None:
        verified = possession_with(redis, directory, now, verify={"sms_otp": FakeVerify(False)})
        self.mark(redis)
        assert not verified.check_code(state(), "sms_otp", directory.get(ALICE.account), "1")
        assert CodeStore(redis).otp(SID_A, "sms_otp") == VERIFY_MARK

    @pytest.mark.parametrize(
        "failure",
        [
            DeliveryError("Verify check failed"),
            TransientDeliveryError("Verify check failed: network error (ReadTimeout)"),
            PermanentDeliveryError("Verify check failed: Twilio error 20003 (HTTP 401)"),
        ],
    )
    def test_an_unreachable_verify_fails_closed(
        self,
        redis: Any,
        directory: RedisCustomerDirectory,
        now: list[float],
        failure: DeliveryError,
    ) -> None:
        """Nobody gets in, and the caller is not blamed: the factor is unavailable."""
        verified = possession_with(redis, directory, now, verify={"sms_otp": FakeVerify(failure)})
        self.mark(redis)
        with pytest.raises(FactorUnavailable):
            verified.check_code(state(), "sms_otp", directory.get(ALICE.account), "123456")
        assert CodeStore(redis).otp(SID_A, "sms_otp") == VERIFY_MARK

    def test_a_mark_without_verify_configured_fails_closed(
        self, redis: Any, possession: Possession, alice_on_file: Customer
    ) -> None:
        self.mark(redis)
        assert possession.check_code(state(), "sms_otp", alice_on_file, "123456") is False

    @pytest.mark.parametrize("answer", [None, ""])
    def test_no_answer_or_no_customer_never_asks_verify(
        self, redis: Any, directory: RedisCustomerDirectory, now: list[float], answer: str | None
    ) -> None:
        fake = FakeVerify(True)
        verified = possession_with(redis, directory, now, verify={"sms_otp": fake})
        self.mark(redis)
        assert not verified.check_code(state(), "sms_otp", directory.get(ALICE.account), answer)
        assert not verified.check_code(state(UNKNOWN_ACCOUNT), "sms_otp", None, "123456")
        assert fake.asked == []


# -- service codes ---------------------------------------------------------------------------


class TestServiceCodes:
    def test_has_the_service_code_length(self, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        assert re.fullmatch(r"[0-9]{8}", code)

    def test_stored_only_as_a_digest(self, redis: Any, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        assert_not_in_redis(redis, code)
        stored = CodeStore(redis).service_code(ALICE.account)
        assert stored is not None
        assert stored.digest == codes.digest(KEY, codes.service_purpose(ALICE.account), code)
        assert 0 < redis.ttl(keys.service_code(ALICE.account)) <= DAY

    def test_accepted_once(self, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        assert possession.check_service_code(ALICE.account, code)
        assert not possession.check_service_code(ALICE.account, code)

    def test_bound_to_the_account(self, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        assert not possession.check_service_code(BOB.account, code)
        assert possession.check_service_code(ALICE.account, code)

    def test_wrong_code_leaves_the_right_one_usable(self, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        for attempt in ("00000000", "", None, code[:-1], code + "1"):
            assert not possession.check_service_code(ALICE.account, attempt)
        assert possession.check_service_code(ALICE.account, code)

    @pytest.mark.parametrize(
        ("after", "accepted"),
        [(0, True), (DAY - 1, True), (DAY + 1, False)],
        ids=["at_once", "23h59m59s", "24h00m01s"],
    )
    def test_valid_for_a_day(
        self, possession: Possession, now: list[float], after: int, accepted: bool
    ) -> None:
        code = possession.issue_service_code(ALICE.account)
        now[0] = T0 + after
        assert possession.check_service_code(ALICE.account, code) is accepted

    def test_a_new_code_replaces_the_old(self, possession: Possession, now: list[float]) -> None:
        old = possession.issue_service_code(ALICE.account)
        now[0] += 60
        new = possession.issue_service_code(ALICE.account)
        if old != new:  # one chance in 10**8 they are equal
            assert not possession.check_service_code(ALICE.account, old)
        assert possession.check_service_code(ALICE.account, new)

    def test_needs_the_code_key(
        self, redis: Any, directory: RedisCustomerDirectory, now: list[float]
    ) -> None:
        with pytest.raises(RuntimeError, match="IVR_CODE_KEY"):
            possession_with(redis, directory, now, key=None).issue_service_code(ALICE.account)

    def test_issue_is_audited_without_the_code(self, redis: Any, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        events = AuditLog(redis).recent()
        assert events[0]["event"] == "service_code_issued"
        assert events[0]["account"] == ALICE.account
        assert code not in json.dumps(events)


# -- asking for a code -----------------------------------------------------------------------


class TestDestination:
    def test_is_what_is_on_file(self) -> None:
        alice = customer(ALICE)
        assert destination(alice, "sms_otp") == ALICE.phone
        assert destination(alice, "email_otp") == ALICE.email
        assert destination(alice, "callback") == ALICE.phone

    def test_nothing_without_a_customer_or_an_address(self) -> None:
        assert destination(None, "sms_otp") is None
        assert destination(customer(ALICE, email=None), "email_otp") is None


class TestRequestCode:
    def test_enqueues_one_send_job_without_secrets(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        assert runtime.possession.request_code(state(), "sms_otp") == "queued"
        [job] = queued(redis)
        assert job.func_name == SEND_CODE_JOB
        assert job.args == (SID_A, "sms_otp", "0")  # the nonce: this send
        assert job.kwargs == {}
        # opaque ids only: no code, no account number, no phone number (SECURITY 11, 23)
        data = zlib.decompress(redis.hget(job.key, "data"))
        assert set(re.findall(rb"[0-9]{6,}", data)) == set()
        assert CALLER.encode() not in data
        assert delivery(redis) == "pending"

    def test_job_is_bounded(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        runtime.possession.request_code(state(), "sms_otp")
        [job] = queued(redis)
        assert job.ttl is not None and 0 < job.ttl <= runtime.settings.code_ttl
        assert 0 < redis.ttl(job.key) <= runtime.settings.code_ttl
        assert job.retries_left is not None and 1 <= job.retries_left <= 3
        intervals = job.retry_intervals or [0]
        waits = sum(intervals[min(i, len(intervals) - 1)] for i in range(job.retries_left))
        assert job.timeout is not None
        worst = (job.retries_left + 1) * job.timeout + waits
        assert worst < runtime.settings.code_ttl  # every retry ends while the code is valid
        assert job.result_ttl == 0

    def test_the_same_request_twice_is_one_job(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        for _ in range(2):
            assert runtime.possession.request_code(state(seq=3), "sms_otp") == "queued"
        assert len(queued(redis)) == 1
        runtime.possession.request_code(state(seq=4), "sms_otp")  # a resend is a new job
        assert len(queued(redis)) == 2

    @pytest.mark.parametrize("scope", ["account", "destination", "prefix"])
    def test_capped_is_unavailable_and_enqueues_nothing(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer], scope: str
    ) -> None:
        value = {"account": ALICE.account, "destination": ALICE.phone, "prefix": "1"}[scope]
        limit = {
            "account": runtime.settings.send_limit_account,
            "destination": runtime.settings.send_limit_destination,
            "prefix": runtime.settings.send_limit_prefix,
        }[scope]
        redis.set(keys.sends(scope, value), limit, ex=600)
        assert runtime.possession.request_code(state(), "sms_otp") == "unavailable"
        assert queued(redis) == []
        assert delivery(redis) is None
        assert audit_outcomes(runtime) == ["send_capped"]

    def test_unmatched_caller_id_claims_do_not_share_one_counter(
        self, redis: Any, runtime: Runtime
    ) -> None:
        """`*` from a number on file for nobody claims "" : each such call is capped on its own,
        so many of them never make an unmatched caller hear a cap a customer would not."""
        limit = runtime.settings.send_limit_account
        for n in range(limit + 2):
            unmatched = state(call_sid=f"CA{n:032x}", account="")
            assert runtime.possession.request_code(unmatched, "sms_otp") == "queued"

    def test_unknown_accounts_are_counted_too(self, redis: Any, runtime: Runtime) -> None:
        limit = runtime.settings.send_limit_account
        for n in range(limit):  # one call each: a call may make fewer requests than an account
            unknown = state(call_sid=f"CA{n:032x}", account=UNKNOWN_ACCOUNT)
            assert runtime.possession.request_code(unknown, "sms_otp") == "queued"
        unknown = state(call_sid=f"CA{limit:032x}", account=UNKNOWN_ACCOUNT)
        assert runtime.possession.request_code(unknown, "sms_otp") == "unavailable"
        assert len(queued(redis)) == limit

    def test_email_does_not_count_against_an_sms_country(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        runtime.possession.request_code(state(), "email_otp")
        assert not list(redis.scan_iter(keys.sends("prefix", "*")))
        assert redis.exists(keys.sends("destination", ALICE.email))


# -- the jobs, run by a real (in-process) rq worker ------------------------------------------


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


class TestPlaceCallbackJob:
    def test_calls_the_phone_on_file_and_leaves_a_reference(
        self,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
    ) -> None:
        asking = CallState(
            call_sid=SID_A,
            caller=BOB.phone,  # whoever calls, the call back goes to the number on file
            step="call_back",
            seq=5,
            account=ALICE.account,
            proofs=["pin"],
            failures=1,
        )
        assert runtime.possession.request_callback(asking, "call_back") == "queued"
        [job] = queued(redis)
        assert job.func_name == PLACE_CALLBACK_JOB
        assert job.result_ttl == 0
        run_jobs(redis)
        [message] = outbox(worker_env)
        assert (message.channel, message.to) == ("call", ALICE.phone)
        assert message.call_sid is not None and re.fullmatch(r"CA[0-9a-f]{32}", message.call_sid)
        ref = CallbackRefs(redis).take(message.call_sid)
        assert ref == CallbackRef(SID_A, BOB.phone, ALICE.account, ["pin"], 1, "call_back")
        assert CallbackRefs(redis).take(message.call_sid) is None  # single use
        assert CallbackRefs(redis).take(SID_A) is None  # not under the asking call's sid

    def test_unknown_account_calls_nobody(
        self, redis: Any, runtime: Runtime, worker_env: Path
    ) -> None:
        asking = state(account=UNKNOWN_ACCOUNT)
        assert runtime.possession.request_callback(asking, "call_back") == "queued"
        run_jobs(redis)
        assert outbox(worker_env) == []
        assert not list(redis.scan_iter(keys.callback("*")))

    def test_missing_caller_id_fails_for_good(
        self,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Like send_code with a missing IVR_SMS_FROM: a settings error is permanent, so the
        job is not retried and the failed delivery is audited."""
        monkeypatch.setenv("IVR_CALL_BACKEND", "twilio")  # and no IVR_CALLER_ID
        runtime.possession.request_callback(state(), "call_back")
        [job] = queued(redis)
        run_jobs(redis)
        assert outbox(worker_env) == []
        assert not list(redis.scan_iter(keys.callback("*")))
        assert audit_outcomes(runtime)[-1] == "failed"
        # finished and gone (result_ttl 0): neither scheduled for a retry nor kept as failed
        assert not Job.exists(job.id, connection=redis)

    def test_capped_is_unavailable(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        redis.set(keys.sends("destination", ALICE.phone), 99, ex=600)
        assert runtime.possession.request_callback(state(), "call_back") == "unavailable"
        assert queued(redis) == []


# -- the service-code API --------------------------------------------------------------------


def api_post(client: FlaskClient, authorization: str | None = None, **kwargs: Any) -> Any:
    headers = {} if authorization is None else {"Authorization": authorization}
    return client.post("/api/service-codes", headers=headers, **kwargs)


AUTH = f"Bearer {API_TOKEN}"


class TestServiceCodeApi:
    @pytest.mark.parametrize(
        "authorization",
        [
            None,
            "",
            "Bearer",
            "Bearer ",
            "Bearer wrong-token-0123456789",
            f"Bearer {API_TOKEN}x",
            f"Bearer {API_TOKEN[:-1]}",
            f"bearer {API_TOKEN}",
            API_TOKEN,
            f"Basic {API_TOKEN}",
            f"Bearer {API_TOKEN} ",
            "Bearer caf\xe9",
        ],
    )
    def test_401_without_the_token(
        self,
        client: FlaskClient,
        redis: Any,
        customers: dict[str, DemoCustomer],
        authorization: str | None,
    ) -> None:
        reference = api_post(client, "Bearer nope", json={"account": ALICE.account})
        response = api_post(client, authorization, json={"account": ALICE.account})
        assert response.status_code == 401
        assert response.get_json() == reference.get_json()
        assert "IVR_API_TOKEN" in response.get_json()["error"]
        assert API_TOKEN not in response.get_data(as_text=True)
        assert not redis.exists(keys.service_code(ALICE.account))

    def test_401_comes_before_reading_the_body(self, client: FlaskClient) -> None:
        response = api_post(client, "Bearer nope", data="{not json", content_type="text/plain")
        assert response.status_code == 401

    def test_no_token_configured_refuses_everyone(
        self, redis: Any, customers: dict[str, DemoCustomer]
    ) -> None:
        from tests.conftest import make_app

        app = make_app(redis, api_token=None)
        response = api_post(app.test_client(), AUTH, json={"account": ALICE.account})
        assert response.status_code == 401
        assert not redis.exists(keys.service_code(ALICE.account))

    @pytest.mark.parametrize(
        "body",
        [
            {"data": "{not json", "content_type": "application/json"},
            {"data": '{"account": "12345678"}', "content_type": "text/plain"},
            {"json": ["12345678"]},
            {"json": "12345678"},
            {"json": {}},
            {"json": {"account": None}},
            {"json": {"account": 12345678}},
            {"json": {"account": "12345"}},
            {"json": {"account": "1234567890123"}},
            {"json": {"account": "1234567a"}},
            {"json": {"account": "12345678\n"}},
            {"json": {"account": "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18"}},
        ],
    )
    def test_400_on_bad_json_or_account(
        self, client: FlaskClient, redis: Any, customers: dict[str, DemoCustomer], body: Any
    ) -> None:
        response = api_post(client, AUTH, **body)
        assert response.status_code == 400
        assert "account" in response.get_json()["error"]
        assert not list(redis.scan_iter(keys.service_code("*")))

    def test_404_unknown_account(
        self, client: FlaskClient, redis: Any, customers: dict[str, DemoCustomer]
    ) -> None:
        response = api_post(client, AUTH, json={"account": UNKNOWN_ACCOUNT})
        assert response.status_code == 404
        assert not list(redis.scan_iter(keys.service_code("*")))

    def test_201_returns_a_code_once_usable(
        self,
        client: FlaskClient,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
    ) -> None:
        response = api_post(client, AUTH, json={"account": ALICE.account})
        assert response.status_code == 201
        assert response.headers["Cache-Control"] == "no-store"
        body = response.get_json()
        assert body["account"] == ALICE.account
        assert body["expires_in"] == runtime.settings.service_code_ttl
        code = body["code"]
        assert re.fullmatch(r"[0-9]{8}", code)
        assert_not_in_redis(redis, code)
        assert not runtime.possession.check_service_code(BOB.account, code)
        assert runtime.possession.check_service_code(ALICE.account, code)
        assert not runtime.possession.check_service_code(ALICE.account, code)

    def test_a_second_request_replaces_the_first_code(
        self, client: FlaskClient, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        first = api_post(client, AUTH, json={"account": ALICE.account}).get_json()["code"]
        second = api_post(client, AUTH, json={"account": ALICE.account}).get_json()["code"]
        if first != second:
            assert not runtime.possession.check_service_code(ALICE.account, first)
        assert runtime.possession.check_service_code(ALICE.account, second)


class TestServiceCodeApiFailsClosed:
    def test_redis_down_is_a_json_503_not_a_500(self, outbox_path: Path) -> None:
        from ivr.store.server import find_free_port

        down = redis_lib.Redis(port=find_free_port(), socket_connect_timeout=0.2,
                               socket_timeout=0.2, retry=Retry(NoBackoff(), 0))  # fmt: skip
        client = make_app(down, outbox=outbox_path).test_client()
        response = client.post(
            "/api/service-codes",
            json={"account": ALICE.account},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        assert response.status_code == 503
        assert response.get_json() == {
            "error": "service codes are unavailable right now; try again shortly"
        }
