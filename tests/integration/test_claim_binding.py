"""Proofs bound to the claim, late sends void, claims of non-matches kept as digests; end to end.

Real gunicorn serving tests/flows/reidentify.yaml (a main menu with "different account number",
back to `identify`; the balance queue opens with an emailed code alone), a real `rq worker`
process, a real Redis; every webhook a signed POST from the call simulator, whose holds really
wait. The worker "emails" into the development outbox, the attacker's mailbox here.

- SECURITY 10, 21, 28: an attacker has a code emailed to their own address, then claims a
  victim (no email on file; an account number that does not exist) and keys in their own code:
  refused like any wrong code, never enqueued.
- SECURITY 26: the worker stalls (SIGSTOP) past the hold; the caller hears the email cannot be
  sent; the worker resumes (SIGCONT) and the stalled job sends nothing.
- SECURITY 11, 23: digits keyed at the account prompt that match no account rest nowhere in
  Redis or in a process log; the worker logs jobs by id, never who they are for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rq import Worker

from ivr.outbox import Outbox
from ivr.simulator import CallResult, HttpTransport, Keys
from ivr.simulator.phone import Phone
from ivr.simulator.player import CallerInput
from ivr.store.customers import Customer
from tests.support import (
    TimedTransport,
    Turns,
    assert_well_served,
    audit_events,
    authentications,
    contains_code,
    deliveries,
    make_player,
    never_enqueued,
    redis_contents,
    seed_customer,
)

HERE = Path(__file__).resolve().parent
TEST_FLOWS = HERE.parent / "flows"

ATTACKER_ACCOUNT, ATTACKER_EMAIL = "87654321", "mallory@example.com"
ATTACKER_PHONE = "+14155550199"
VICTIM_ACCOUNT, VICTIM_PHONE = "12345678", "+14155550100"  # no email on file
UNKNOWN_ACCOUNT = "55500555"  # nobody's
PIN = "583920"
MISTYPED = "73950412"  # keyed at the account prompt; matches no account

HOLD = "Please hold while we email a code to the address on file."
CODE_WRONG = "That code did not match. You have 1 attempt left."
NO_EMAIL = "Sorry, we cannot send an email right now."
MAX_WAIT = 8.0  # tests/flows/reidentify.yaml: email_code.max_wait


@pytest.fixture
def env(outbox_path: Path) -> dict[str, str]:
    return {
        "IVR_FLOWS_DIR": str(TEST_FLOWS),
        "IVR_FLOW": "reidentify",
        "IVR_OUTBOX": str(outbox_path),
    }


@pytest.fixture
def web(web_factory, env):
    return web_factory(env)


@pytest.fixture
def worker(worker_factory, env):
    return worker_factory(env)


@pytest.fixture
def accounts(redis_url: str, pin_hash: str) -> None:
    """The attacker's own account (their email on file) and a victim with no email."""
    seed_customer(
        redis_url,
        Customer(ATTACKER_ACCOUNT, ATTACKER_PHONE, email=ATTACKER_EMAIL, pin_hash=pin_hash),
    )
    seed_customer(redis_url, Customer(VICTIM_ACCOUNT, VICTIM_PHONE, pin_hash=pin_hash))


def own_code(outbox_path: Path) -> Callable[[], CallerInput]:
    """The newest code in the attacker's mailbox, keyed in."""
    mailbox = Phone(Outbox(outbox_path))

    def key_in() -> CallerInput:
        code = mailbox.latest_code()
        assert code is not None, "no code reached the attacker's mailbox"
        return Keys(code + "#")

    return key_in


@contextlib.contextmanager
def stalled(worker) -> Iterator[None]:
    """The worker and its work horse frozen (SIGSTOP to its process group), then resumed."""
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(worker.pid, signal.SIGCONT)


def wait_for_jobs(rdb, worker, count: int, timeout: float = 20.0) -> None:
    """Until the worker has finished `count` jobs (successfully: these jobs never raise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [w for w in Worker.all(connection=rdb) if w.name == worker.name]
        if found and found[0].successful_job_count >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"the worker finished fewer than {count} jobs\n{worker.log_tail()}")


class TestTheAttackersCodeProvesNothingForAVictim:
    @pytest.mark.parametrize(
        "victim", [VICTIM_ACCOUNT, UNKNOWN_ACCOUNT], ids=["no_email", "unknown"]
    )
    def test_own_code_keyed_in_after_claiming_a_victim_is_refused(
        self, web, worker, auth_token, accounts, rdb, outbox_path, victim
    ) -> None:
        caller = Turns(
            ("identify", Keys(ATTACKER_ACCOUNT + "#")),
            ("main_menu", Keys("1")),  # a code to the attacker's own address
            ("email_code", None),  # not used here: silence goes back to the menu
            ("main_menu", Keys("9")),  # "different account number"
            ("identify", Keys(victim + "#")),
            ("main_menu", Keys("1")),
            ("email_code", own_code(outbox_path)),
        )
        transport = TimedTransport(HttpTransport())
        call = make_player(web.base_url, auth_token, transport, from_number=ATTACKER_PHONE)

        result = call.play(caller)

        assert_well_served(result)
        assert never_enqueued(result), result.transcript()
        assert result.said(CODE_WRONG), result.transcript()
        assert caller.turns == []
        transport.assert_prompt()
        # One email: the attacker's own. Nothing went to (or for) the victim.
        assert [(m.channel, m.to) for m in Outbox(outbox_path).messages()] == [
            ("email", ATTACKER_EMAIL)
        ]
        outcome = "failure" if victim == VICTIM_ACCOUNT else "failure_unknown_account"
        assert authentications(rdb, call.call_sid) == [("email_otp", outcome)]
        dropped = [e for e in audit_events(rdb, call.call_sid) if e["event"] == "claim_dropped"]
        assert [e["account"] for e in dropped] == [ATTACKER_ACCOUNT]


class TestAStalledWorkerNeverSendsLate:
    def test_the_send_the_caller_was_told_failed_never_goes_out(
        self, web, worker, auth_token, accounts, rdb, outbox_path
    ) -> None:
        caller = Turns(("identify", Keys(ATTACKER_ACCOUNT + "#")), ("main_menu", Keys("1")))
        transport = TimedTransport(HttpTransport())
        call = make_player(web.base_url, auth_token, transport, from_number=ATTACKER_PHONE)

        with stalled(worker):
            started = time.monotonic()
            result = call.play(caller)
            held = time.monotonic() - started
            assert Outbox(outbox_path).messages() == []

        assert_well_served(result)
        assert never_enqueued(result)
        assert result.said(HOLD) and result.said(NO_EMAIL), result.transcript()
        assert held >= MAX_WAIT
        transport.assert_prompt()

        wait_for_jobs(rdb, worker, 1)  # the stalled job ran once the worker resumed
        assert Outbox(outbox_path).messages() == []
        assert ("email_otp", "sent") not in deliveries(rdb, call.call_sid)
        assert rdb.hget(f"ivr:delivery:{call.call_sid}:email_otp", "status") == b"abandoned"
        assert not rdb.exists(f"ivr:otp:{call.call_sid}:email_otp")


class TestNothingPersonalRests:
    def test_digits_that_match_no_account_rest_nowhere(
        self, web, worker, auth_token, accounts, rdb, outbox_path
    ) -> None:
        dumps: list[bytes] = []

        def wrong_code() -> CallerInput:
            dumps.append(redis_contents(rdb))  # mid-call: the call's state, its send, caps
            return Keys("123456#")

        caller = Turns(
            ("identify", Keys(MISTYPED + "#")),
            ("main_menu", Keys("1")),
            ("email_code", wrong_code),
        )
        call = make_player(web.base_url, auth_token, from_number=ATTACKER_PHONE)

        result = call.play(caller)

        assert_well_served(result)
        assert result.said(CODE_WRONG), result.transcript()
        wait_for_jobs(rdb, worker, 1)
        dumps.append(redis_contents(rdb))
        for dump in dumps:
            assert f"ivr:call:{call.call_sid}".encode() in dump  # a real dump of this call
            assert not contains_code(dump, MISTYPED), "the digits rest in Redis"
        for proc in (web, worker):
            assert proc.log(), f"{proc} wrote no log"
            assert not contains_code(proc.log(), MISTYPED), f"the digits are in the log of {proc}"
        claims = {e["account"] for e in audit_events(rdb, call.call_sid) if "account" in e}
        assert len(claims) == 1 and claims.pop().startswith("unmatched-")  # the keyed digest

    def test_the_worker_logs_jobs_by_id_not_by_whom_they_serve(
        self, web, worker, auth_token, accounts, rdb, outbox_path
    ) -> None:
        caller = Turns(
            ("identify", Keys(ATTACKER_ACCOUNT + "#")),
            ("main_menu", Keys("1")),
            ("email_code", own_code(outbox_path)),
        )
        call = make_player(web.base_url, auth_token, from_number=ATTACKER_PHONE)

        result: CallResult = call.play(caller)

        assert result.outcome == "enqueued", result.transcript()
        wait_for_jobs(rdb, worker, 1)
        log = worker.log()
        assert f"code-{call.call_sid}-email_otp-" in log  # it did log the job...
        for personal in (ATTACKER_ACCOUNT, ATTACKER_EMAIL, ATTACKER_PHONE):
            assert personal not in log  # ...but not whose it is, nor where it went
