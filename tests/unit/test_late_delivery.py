"""A send the caller was told had failed never counts (SECURITY 26).

The caller holds at most the step's `max_wait`; then they hear "cannot send" and the engine
abandons the send (`Ports.abandon_delivery`). From then on the job neither issues a code nor
sends one, and a code it already issued is void. The same holds once the call claims another
account (`Ports.drop_claim`). The job checks its delivery's deadline (request time + `max_wait`)
in the transaction that issues the code, so a stalled worker never sends late.

The jobs run for real in this process (rq's SimpleWorker on fakeredis), their settings from the
environment (`worker_env`), delivering to the development outbox.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rq import Queue

import workers.jobs as jobs
from ivr.auth import codes
from ivr.auth.possession import CALLBACK_WITHIN, JOB_TIMEOUT, JOB_TTL
from ivr.flows.engine import CallState
from ivr.flows.schema import MAX_WAIT
from ivr.outbox import Outbox
from ivr.processes import QUEUE
from ivr.runtime import Runtime
from ivr.store import keys
from ivr.store.codes import CallbackRef, CodeStore, DeliveryRecord
from ivr.worker import OUTAGE_BUDGET
from tests.conftest import ALICE, BOB, DemoCustomer, run_jobs

SID = "CA" + "ab" * 16
NOW = 1_800_000_000.0


def asking(account: str = ALICE.account, seq: int = 4) -> CallState:
    return CallState(call_sid=SID, caller="+15005550006", step="sms_code", seq=seq, account=account)


def outbox(path: Path) -> list[Any]:
    return Outbox(path).messages()


def code_of(path: Path) -> str:
    (message,) = outbox(path)
    found = codes.CODE_PATTERN.search(message.body)
    assert found, message.body
    return found.group(0)


@pytest.fixture
def store(redis: Any) -> CodeStore:
    return CodeStore(redis)


def opened(store: CodeStore, nonce: str = "1", deadline: float = NOW + 12) -> None:
    store.open_delivery(SID, "sms_otp", nonce, claim=ALICE.account, deadline=deadline, ttl=600)


ISSUED = codes.IssuedCode("d" * 64, NOW + 600)


class TestDeliveryRecord:
    def test_holds_the_claim_and_deadline_not_the_destination(self, store: CodeStore) -> None:
        opened(store)
        assert store.delivery_record(SID, "sms_otp") == DeliveryRecord(
            "1", "pending", ALICE.account, NOW + 12
        )
        raw = store.redis.hgetall(keys.delivery(SID, "sms_otp"))
        assert ALICE.phone.encode() not in b"".join(raw.values())

    def test_a_new_send_replaces_the_old_record_whole(self, store: CodeStore) -> None:
        ref = CallbackRef(SID, "+15005550006", ALICE.account, ["pin"], 0, "call_back")
        store.open_delivery(SID, "sms_otp", "1", claim="x", deadline=NOW, ttl=600, callback=ref)
        opened(store, "2")
        record = store.delivery_record(SID, "sms_otp")
        assert record is not None and (record.nonce, record.callback) == ("2", None)

    def test_a_record_it_cannot_read_is_no_delivery(self, store: CodeStore) -> None:
        store.redis.hset(keys.delivery(SID, "sms_otp"), mapping={"status": "pending", "nonce": "1"})
        assert store.delivery_record(SID, "sms_otp") is None
        assert not store.settle(SID, "sms_otp", "1", 600, issue=ISSUED, now=NOW)


class TestSettle:
    def test_issues_within_the_deadline(self, store: CodeStore) -> None:
        opened(store)
        assert store.settle(SID, "sms_otp", "1", 600, issue=ISSUED, now=NOW + 11.9)
        assert store.otp(SID, "sms_otp") == ISSUED

    def test_refuses_to_issue_from_the_deadline_on(self, store: CodeStore) -> None:
        opened(store)
        assert not store.settle(SID, "sms_otp", "1", 600, issue=ISSUED, now=NOW + 12)
        assert store.otp(SID, "sms_otp") is None
        assert store.delivery(SID, "sms_otp") == "pending"

    def test_issuing_needs_the_time(self, store: CodeStore) -> None:
        opened(store)
        with pytest.raises(ValueError, match="deadline"):
            store.settle(SID, "sms_otp", "1", 600, issue=ISSUED)

    @pytest.mark.parametrize("final", ["sent", "failed"])
    def test_a_settled_send_is_final(self, store: CodeStore, final: str) -> None:
        opened(store)
        assert store.settle(SID, "sms_otp", "1", 600, status=final)  # type: ignore[arg-type]
        assert not store.settle(SID, "sms_otp", "1", 600, issue=ISSUED, now=NOW)
        assert not store.settle(SID, "sms_otp", "1", 600, status="failed")
        assert store.delivery(SID, "sms_otp") == final

    def test_abandon_voids_the_code_and_refuses_everything_after(self, store: CodeStore) -> None:
        opened(store)
        assert store.settle(SID, "sms_otp", "1", 600, issue=ISSUED, now=NOW)
        store.abandon(SID, "sms_otp")
        assert store.otp(SID, "sms_otp") is None
        assert store.delivery(SID, "sms_otp") == "abandoned"
        assert not store.settle(SID, "sms_otp", "1", 600, status="sent")
        assert not store.settle(SID, "sms_otp", "1", 600, issue=ISSUED, now=NOW)
        assert store.otp(SID, "sms_otp") is None

    def test_abandon_creates_no_record(self, store: CodeStore) -> None:
        store.abandon(SID, "sms_otp", "email_otp", "callback")
        assert store.redis.keys("*") == []


@pytest.fixture
def jobs_at(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`jobs_at(t)`: the worker's clock reads `t` from now on."""

    def set_clock(at: float) -> None:
        monkeypatch.setattr(jobs, "time", SimpleNamespace(time=lambda: at))

    return set_clock


class TestTheJob:
    def test_a_job_started_past_its_deadline_sends_nothing(
        self,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
        jobs_at: Any,
    ) -> None:
        asked = time.time()
        runtime.possession.request_code(asking(), "sms_otp", max_wait=8)
        jobs_at(asked + 8.5)  # the worker was stalled past the hold
        run_jobs(redis)
        assert outbox(worker_env) == []
        assert CodeStore(redis).otp(SID, "sms_otp") is None
        assert CodeStore(redis).delivery(SID, "sms_otp") == "failed"

    def test_a_job_within_its_deadline_sends(
        self,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
        jobs_at: Any,
    ) -> None:
        asked = time.time()
        runtime.possession.request_code(asking(), "sms_otp", max_wait=8)
        jobs_at(asked + 7.5)
        run_jobs(redis)
        assert [m.to for m in outbox(worker_env)] == [ALICE.phone]

    def test_an_abandoned_send_never_goes_out(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer], worker_env: Path
    ) -> None:
        state = asking()
        runtime.possession.request_code(state, "sms_otp", max_wait=8)
        runtime.possession.abandon_delivery(state, "sms_otp")  # the caller heard "cannot send"
        assert run_jobs(redis)
        assert outbox(worker_env) == []
        assert CodeStore(redis).delivery(SID, "sms_otp") == "abandoned"

    def test_a_code_sent_just_before_the_caller_gave_up_is_void(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer], worker_env: Path
    ) -> None:
        state = asking()
        runtime.possession.request_code(state, "sms_otp", max_wait=8)
        run_jobs(redis)
        code = code_of(worker_env)
        runtime.possession.abandon_delivery(state, "sms_otp")
        alice = runtime.customers.get(ALICE.account)
        assert not runtime.possession.check_code(state, "sms_otp", alice, code)

    def test_claiming_another_account_voids_the_pending_send(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer], worker_env: Path
    ) -> None:
        state = asking(BOB.account)
        runtime.possession.request_code(state, "email_otp", max_wait=8)
        runtime.possession.drop_claim(state)
        assert run_jobs(redis)
        assert outbox(worker_env) == []

    def test_claiming_another_account_voids_a_sent_code(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer], worker_env: Path
    ) -> None:
        state = asking(BOB.account)
        runtime.possession.request_code(state, "email_otp", max_wait=8)
        run_jobs(redis)
        code = code_of(worker_env)
        runtime.possession.drop_claim(state)
        bob = runtime.customers.get(BOB.account)
        assert not runtime.possession.check_code(state, "email_otp", bob, code)

    def test_a_call_back_asked_too_long_ago_is_not_placed(
        self,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
        jobs_at: Any,
    ) -> None:
        asked = time.time()
        runtime.possession.request_callback(asking(), "call_back")
        jobs_at(asked + CALLBACK_WITHIN + 1)
        run_jobs(redis)
        assert outbox(worker_env) == []


class TestTheHoldAndTheJobAgree:
    def test_a_job_outlives_every_deadline_and_a_redis_outage(self) -> None:
        """rq drops a job not started within its TTL, and kills one running past its timeout.
        The deadline, not the TTL, decides: a job the worker reaches late must still run, to
        refuse and refund its send; and a job riding out a Redis restart must not be killed."""
        assert max(MAX_WAIT, CALLBACK_WITHIN) + OUTAGE_BUDGET <= JOB_TTL
        assert JOB_TIMEOUT > OUTAGE_BUDGET

    def test_the_deadline_is_the_request_time_plus_max_wait(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        before = time.time()
        runtime.possession.request_code(asking(), "sms_otp", max_wait=8)
        record = CodeStore(redis).delivery_record(SID, "sms_otp")
        assert record is not None
        assert before + 8 <= record.deadline <= time.time() + 8
        (job,) = Queue(QUEUE, connection=redis).jobs
        assert job.ttl == JOB_TTL
