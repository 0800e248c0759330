"""What a caller keys at the account prompt rests nowhere unless it is an account (SECURITY 11, 23).

A matched account is kept by its number; digits that match nothing (a mistyped account number,
or a PIN keyed at the wrong prompt) only as a keyed digest, the claim id, and everything
downstream (call state, audit stream, send caps, delivery records, job arguments, logs) sees
only that. Jobs carry opaque ids (call, method, nonce), and rq logs their ids, not arguments.
"""

from __future__ import annotations

import logging
import re
import zlib
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from rq import Queue

from ivr.auth import claims
from ivr.auth.possession import PLACE_CALLBACK_JOB
from ivr.flows.engine import CallState
from ivr.processes import QUEUE
from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, CallResult, Keys, scripted
from tests.conftest import ALICE, CODE_KEY, REPO_ROOT, DemoCustomer, PlayerFactory, make_app
from tests.conftest import run_jobs as run_queued_jobs
from tests.support import audit_events, contains_code, redis_contents

MISTYPED = "73950412"  # matches no account
SID = "CA" + "ab" * 16  # no digit runs of its own


def scripted_call(player: CallPlayer, *answers: Keys | None) -> CallResult:
    """Play `answers`, then stay silent until the IVR says goodbye."""
    return player.play(scripted(*answers, None, None, None))


def assert_rests_nowhere(digits: str, redis: Any, log: str) -> None:
    blob = redis_contents(redis)
    assert b"ivr:call:" in blob  # a real dump of a real call
    assert not contains_code(blob, digits), f"{digits} rests in Redis"
    assert not contains_code(log, digits), f"{digits} is in the log"


class TestDefaultFlow:
    def test_a_pin_keyed_at_the_account_prompt_rests_nowhere(
        self,
        player: PlayerFactory,
        redis: Any,
        customers: dict[str, DemoCustomer],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        call = player()
        result = scripted_call(call, Keys(ALICE.pin + "#"), Keys("1"), Keys(ALICE.pin + "#"))
        assert result.said("That did not match our records"), result.transcript()

        assert_rests_nowhere(ALICE.pin, redis, caplog.text)
        claimed = {e["account"] for e in audit_events(redis, call.call_sid) if "account" in e}
        assert claimed == {claims.unmatched_claim(CODE_KEY, ALICE.pin)}

    def test_a_matched_account_is_kept_by_its_number(
        self, player: PlayerFactory, redis: Any, customers: dict[str, DemoCustomer]
    ) -> None:
        call = player()
        scripted_call(call, Keys(ALICE.account + "#"), Keys("1"), Keys("000000#"))
        claims = {e["account"] for e in audit_events(redis, call.call_sid) if "account" in e}
        assert claims == {ALICE.account}


@pytest.fixture
def reidentify_app(redis: Any, outbox_path: Path) -> Flask:
    """The flow that offers an emailed code before any secret: an unmatched claim can ask."""
    return make_app(
        redis, outbox=outbox_path, flows_dir=REPO_ROOT / "tests" / "flows", flow="reidentify"
    )


class TestAnUnmatchedClaimAsksForACode:
    def test_the_digits_reach_neither_the_job_nor_redis_nor_the_log(
        self,
        player: PlayerFactory,
        reidentify_app: Flask,
        redis: Any,
        worker_env: Path,
        customers: dict[str, DemoCustomer],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        queued: list[tuple[Any, ...]] = []
        dumps: list[bytes] = []

        def worker_at_hold(kind: str, line: str) -> None:
            if kind == "pause":
                queue = Queue(QUEUE, connection=redis)
                queued.extend(job.args for job in queue.jobs)
                dumps.append(redis_contents(redis))  # the job as it waits, args decoded
                run_queued_jobs(redis, logging_level="DEBUG")

        call = player(app=reidentify_app, pause_scale=0, observer=worker_at_hold)
        result = scripted_call(call, Keys(MISTYPED + "#"), Keys("1"), Keys("123456#"))
        assert result.said("That code did not match"), result.transcript()

        (args,) = queued
        assert args[:2] == (call.call_sid, "email_otp") and len(args) == 3  # opaque ids only
        for dump in [*dumps, redis_contents(redis)]:
            assert not contains_code(dump, MISTYPED)
        assert_rests_nowhere(MISTYPED, redis, caplog.text)


class TestJobArguments:
    def test_a_call_back_job_carries_no_account_and_no_phone(
        self,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        caller = "+14155550123"
        asking = CallState(SID, caller, "call_back", seq=5, account=ALICE.account, proofs=["pin"])
        assert runtime.possession.request_callback(asking, "call_back") == "queued"
        (job,) = Queue(QUEUE, connection=redis).jobs
        assert job.func_name == PLACE_CALLBACK_JOB
        assert job.args == (SID, "5")
        data = zlib.decompress(redis.hget(job.key, "data"))
        for personal in (ALICE.account, ALICE.phone, caller):
            assert personal.encode() not in data
            assert personal not in (job.description or "")
        run_queued_jobs(redis, logging_level="DEBUG")
        assert job.id in caplog.text  # rq logged the job, by id...
        for personal in (ALICE.account, ALICE.phone, caller):
            assert personal not in caplog.text  # ...and nothing personal

    def test_a_code_job_is_described_by_its_id(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        asking = CallState(SID, "+14155550123", "sms_code", seq=2, account=ALICE.account)
        runtime.possession.request_code(asking, "sms_otp", 8)
        (job,) = Queue(QUEUE, connection=redis).jobs
        assert job.args == (SID, "sms_otp", "2")
        assert job.description == job.id == f"code-{SID}-sms_otp-2"
        assert not re.search(r"[0-9]{6,}", job.description)
