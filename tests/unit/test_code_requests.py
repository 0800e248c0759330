"""Asking for a code: the destination on file, and the one send job enqueued without secrets."""

from __future__ import annotations

import re
import zlib
from typing import Any

import pytest

from ivr.auth.possession import (
    SEND_CODE_JOB,
    destination,
)
from ivr.runtime import Runtime
from ivr.store import keys
from tests.conftest import (
    ALICE,
    DemoCustomer,
    customer,
    state,
)
from tests.support import (
    CALLER,
    SID_A,
    UNKNOWN_ACCOUNT,
    audit_outcomes,
    delivery,
    queued,
)


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
