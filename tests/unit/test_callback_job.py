"""The worker's place_callback job: the call back to the phone on file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from rq.job import Job

from ivr.auth.possession import (
    PLACE_CALLBACK_JOB,
)
from ivr.flows.engine import CallState
from ivr.runtime import Runtime
from ivr.store import keys
from ivr.store.codes import CallbackRef, CallbackRefs
from tests.conftest import (
    ALICE,
    BOB,
    DemoCustomer,
    run_jobs,
    state,
)
from tests.support import (
    SID_A,
    UNKNOWN_ACCOUNT,
    audit_outcomes,
    outbox,
    queued,
)


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
