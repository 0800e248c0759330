"""Send caps count only sends that happen (SECURITY 14, 21, 30), on fakeredis (with its Lua).

The limiter itself; what a call, a claimed account (known or not) and a country prefix may ask
for through `Possession`; and the worker's jobs handing back a send they did not make, run by
rq's SimpleWorker in this process (`run_jobs`) with settings from `worker_env`.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rq import Queue

from ivr.auth import codes
from ivr.errors import SettingsError
from ivr.flows.engine import CallState
from ivr.outbox import Outbox
from ivr.processes import QUEUE
from ivr.runtime import Runtime, send_limits
from ivr.settings import load_settings
from ivr.store import keys
from ivr.store.send_caps import SendLimiter, SendLimits, SendScopes, refund
from tests.conftest import ALICE, DemoCustomer, run_jobs
from workers import jobs

SID = "CA" + "ab" * 16
UNKNOWN_ACCOUNT = "99999999"
LIMITS = SendLimits(account=3, destination=4, prefix=6, window=600, per_call=10, call_window=3600)


def scopes(
    account: str = "11111111",
    to: str | None = "+14155550100",
    method: str = "sms_otp",
    call: str = SID,
) -> SendScopes:
    return SendScopes.of(call, account, method, to)


def sid(n: int) -> str:
    return f"CA{n:032x}"


def counters(redis: Any) -> dict[str, int]:
    """Every send counter in Redis, by key."""
    return {key.decode(): int(redis.get(key)) for key in redis.scan_iter(keys.sends("*", "*"))}


def count(redis: Any, scope: str, value: str) -> int:
    return int(redis.get(keys.sends(scope, value)) or 0)


def asking(call_sid: str = SID, account: str | None = ALICE.account, seq: int = 0) -> CallState:
    return CallState(
        call_sid=call_sid, caller="+15005550006", step="sms_code", seq=seq, account=account
    )


def capped_details(runtime: Runtime) -> list[str]:
    return [
        e.get("detail", "")
        for e in reversed(runtime.audit.recent(1000))
        if e["event"] == "delivery" and e.get("outcome") == "send_capped"
    ]


# -- the limiter -----------------------------------------------------------------------------


class TestLimiter:
    def test_caps_per_account(self, redis: Any) -> None:
        limiter = SendLimiter(redis, LIMITS)
        results = [limiter.allow(scopes(to=f"+1415555000{i}")).capped for i in range(4)]
        assert results == [None, None, None, "account"]
        assert limiter.allow(scopes(account="22222222", to="+14155550009"))  # another account

    def test_caps_per_destination(self, redis: Any) -> None:
        limiter = SendLimiter(redis, LIMITS)
        # one phone number on file for several accounts
        results = [limiter.allow(scopes(account=f"1111111{i}")).capped for i in range(5)]
        assert results == [None] * 4 + ["destination"]
        assert limiter.allow(scopes(account="22222222", to="+14155550101"))

    def test_caps_per_country_prefix(self, redis: Any) -> None:
        limiter = SendLimiter(redis, LIMITS)
        results = [
            limiter.allow(scopes(account=f"1111111{i}", to=f"+4420712345{i:02d}")).capped
            for i in range(7)
        ]
        assert results == [None] * 6 + ["prefix"]  # SMS pumping to one country stops
        assert limiter.allow(scopes(account="22222222", to="+35312345678"))

    def test_caps_per_call(self, redis: Any) -> None:
        limiter = SendLimiter(redis, SendLimits(5, 5, 200, 600, per_call=2, call_window=3600))
        results = [
            limiter.allow(scopes(account=f"1111111{i}", to=f"+1415555010{i}")).capped
            for i in range(3)
        ]
        assert results == [None, None, "call"]
        assert limiter.allow(scopes(account="11111119", to="+14155550109", call=sid(2)))

    def test_emails_count_against_no_prefix(self, redis: Any) -> None:
        SendLimiter(redis, LIMITS).allow(scopes(to="alice@example.com", method="email_otp"))
        assert set(counters(redis)) == {
            keys.sends("call", SID),
            keys.sends("account", "11111111"),
            keys.sends("destination", "alice@example.com"),
        }

    def test_a_refused_request_counts_against_nothing(self, redis: Any) -> None:
        limiter = SendLimiter(redis, LIMITS)
        for _ in range(LIMITS.account):
            assert limiter.allow(scopes())
        before = counters(redis)
        assert [limiter.allow(scopes()).capped for _ in range(20)] == ["account"] * 20
        assert counters(redis) == before
        assert before[keys.sends("prefix", "1")] == LIMITS.account

    def test_a_capped_account_leaves_the_prefix_budget_to_others(self, redis: Any) -> None:
        limiter = SendLimiter(redis, LIMITS)
        pressed = [bool(limiter.allow(scopes(account="11111111"))) for _ in range(50)]
        assert pressed.count(True) == LIMITS.account
        others = [
            limiter.allow(scopes(account=f"2222222{i}", to=f"+1415555020{i}")).capped
            for i in range(4)
        ]
        assert others == [None, None, None, "prefix"]  # 3 + 3 = the prefix budget of 6

    def test_unknown_accounts_count_only_the_claim(self, redis: Any) -> None:
        limiter = SendLimiter(redis, LIMITS)
        results = [limiter.allow(scopes(account=UNKNOWN_ACCOUNT, to=None)).capped for _ in range(5)]
        assert results == [None, None, None, "account", "account"]
        assert counters(redis) == {
            keys.sends("call", SID): 3,
            keys.sends("account", UNKNOWN_ACCOUNT): 3,
        }

    def test_an_unmatched_caller_id_claim_is_counted_per_call(self, redis: Any) -> None:
        SendLimiter(redis, LIMITS).allow(scopes(account="", to=None))
        assert count(redis, "account", f"call-{SID}") == 1

    def test_each_window_opens_with_its_first_send(self, redis: Any) -> None:
        SendLimiter(redis, LIMITS).allow(scopes())
        for scope, value in (
            ("account", "11111111"),
            ("destination", "+14155550100"),
            ("prefix", "1"),
        ):
            assert 0 < redis.ttl(keys.sends(scope, value)) <= LIMITS.window
        assert LIMITS.window < redis.ttl(keys.sends("call", SID)) <= LIMITS.call_window

    def test_a_refund_hands_back_all_but_the_call(self, redis: Any) -> None:
        limiter = SendLimiter(redis, LIMITS)
        limiter.allow(scopes())
        limiter.allow(scopes())
        refund(redis, scopes())
        assert counters(redis) == {
            keys.sends("call", SID): 2,
            keys.sends("account", "11111111"): 1,
            keys.sends("destination", "+14155550100"): 1,
            keys.sends("prefix", "1"): 1,
        }
        assert 0 < redis.ttl(keys.sends("account", "11111111")) <= LIMITS.window

    def test_a_refund_never_goes_below_zero_nor_outlives_its_window(self, redis: Any) -> None:
        limiter = SendLimiter(redis, LIMITS)
        limiter.allow(scopes())
        for _ in range(3):
            refund(redis, scopes())
        redis.delete(keys.sends("destination", "+14155550100"))  # that window closed
        refund(redis, scopes())
        assert counters(redis) == {
            keys.sends("call", SID): 1,
            keys.sends("account", "11111111"): 0,
            keys.sends("prefix", "1"): 0,
        }
        assert [bool(limiter.allow(scopes())) for _ in range(4)] == [True, True, True, False]

    @pytest.mark.parametrize(
        ("number", "prefix"),
        [
            ("+14155550100", "1"),
            ("+74951234567", "7"),
            ("+442071234567", "44"),
            ("+35312345678", "353"),
            ("+8613812345678", "86"),
            ("+8801712345678", "880"),
        ],
    )
    def test_country_prefix(self, number: str, prefix: str) -> None:
        assert codes.country_prefix(number) == prefix
        assert SendScopes.of(SID, "11111111", "callback", number).prefix == prefix


# -- what a caller may ask for ---------------------------------------------------------------


class TestRequests:
    def test_a_call_may_make_three_code_requests_of_any_kind(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        assert runtime.settings.code_requests_per_call == 3
        possession = runtime.possession
        asked = [
            possession.request_code(asking(seq=0), "sms_otp"),
            possession.request_code(asking(seq=1), "sms_otp"),  # a resend
            possession.request_code(asking(seq=2), "email_otp"),
            possession.request_callback(asking(seq=3), "call_back"),
            possession.request_code(asking(seq=4), "email_otp"),
        ]
        assert asked == ["queued"] * 3 + ["unavailable"] * 2
        assert len(Queue(QUEUE, connection=redis).job_ids) == 3
        assert capped_details(runtime) == ["call", "call"]
        assert possession.request_code(asking(call_sid=sid(1)), "sms_otp") == "queued"

    def test_the_bound_is_a_setting(self, redis: Any) -> None:
        limits = send_limits(load_settings(code_requests_per_call=1))
        limiter = SendLimiter(redis, limits)
        assert [limiter.allow(scopes()).capped for _ in range(2)] == [None, "call"]

    def test_refusals_are_audited_by_cap_and_never_by_destination(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        redis.set(keys.sends("prefix", "1"), runtime.settings.send_limit_prefix, ex=600)
        assert runtime.possession.request_code(asking(), "sms_otp") == "unavailable"
        [event] = [e for e in runtime.audit.recent() if e.get("outcome") == "send_capped"]
        assert event["detail"] == "prefix"
        assert ALICE.phone not in str(event)
        assert count(redis, "account", ALICE.account) == 0  # refused: counted nowhere

    def test_known_and_unknown_accounts_meet_the_same_refusals(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer], worker_env: Path
    ) -> None:
        """Many calls pressing "text me", some twice before the worker ran (the first send is
        then superseded), some after it ran: an unknown account is refused exactly when a
        known one is, and for the same cap."""

        def probe(account: str, first_call: int) -> list[str]:
            heard: list[str] = []
            for n in range(4):
                call = sid(first_call + n)
                for seq in range(4):
                    heard.append(
                        runtime.possession.request_code(asking(call, account, seq), "sms_otp")
                    )
                    if seq % 2:
                        run_jobs(redis)
            return heard

        known = probe(ALICE.account, 0)
        known_caps = capped_details(runtime)
        unknown = probe(UNKNOWN_ACCOUNT, 100)
        unknown_caps = capped_details(runtime)[len(known_caps) :]
        assert known == unknown
        assert known_caps == unknown_caps
        assert "queued" in known and "unavailable" in known
        assert set(known_caps) == {"call", "account"}
        assert count(redis, "account", ALICE.account) == count(redis, "account", UNKNOWN_ACCOUNT)


# -- the worker hands back what it did not send ----------------------------------------------


class TestRefunds:
    def sent_counters(self, redis: Any) -> dict[str, int]:
        return {
            scope: count(redis, scope, value)
            for scope, value in (
                ("call", SID),
                ("account", ALICE.account),
                ("destination", ALICE.phone),
                ("prefix", "1"),
            )
        }

    def test_a_send_that_went_out_stays_counted(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer], worker_env: Path
    ) -> None:
        runtime.possession.request_code(asking(), "sms_otp")
        run_jobs(redis)
        assert len(Outbox(worker_env).messages()) == 1
        assert self.sent_counters(redis) == {"call": 1, "account": 1, "destination": 1, "prefix": 1}

    @pytest.mark.parametrize(
        "never_made", ["sms_failed_for_good", "callback_failed_for_good", "stale"]
    )
    def test_a_send_never_made_is_handed_back(
        self,
        never_made: str,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        if never_made == "sms_failed_for_good":
            monkeypatch.setenv("IVR_SMS_BACKEND", "twilio")  # and no IVR_SMS_FROM: fails for good
            runtime.possession.request_code(asking(), "sms_otp")
        elif never_made == "callback_failed_for_good":
            monkeypatch.setenv("IVR_CALL_BACKEND", "twilio")  # and no IVR_CALLER_ID: for good
            runtime.possession.request_callback(asking(), "call_back")
        else:
            runtime.possession.request_code(asking(), "sms_otp", max_wait=12)
            late = time.time() + 13  # the worker gets to it after the caller stopped holding
            monkeypatch.setattr(jobs, "time", SimpleNamespace(time=lambda: late))
        run_jobs(redis)
        assert Outbox(worker_env).messages() == []
        assert self.sent_counters(redis) == {"call": 1, "account": 0, "destination": 0, "prefix": 0}

    def test_a_superseded_send_is_handed_back(
        self, redis: Any, runtime: Runtime, customers: dict[str, DemoCustomer], worker_env: Path
    ) -> None:
        runtime.possession.request_code(asking(seq=0), "sms_otp")
        runtime.possession.request_code(asking(seq=1), "sms_otp")  # before the worker ran
        run_jobs(redis)
        assert len(Outbox(worker_env).messages()) == 1
        assert self.sent_counters(redis) == {"call": 2, "account": 1, "destination": 1, "prefix": 1}

    def test_a_send_to_nobody_stays_counted_like_a_customers(
        self, redis: Any, runtime: Runtime, worker_env: Path
    ) -> None:
        """The caller of an unknown account is told a code is on its way, as a customer is."""
        runtime.possession.request_code(asking(account=UNKNOWN_ACCOUNT), "sms_otp")
        run_jobs(redis)
        assert Outbox(worker_env).messages() == []
        assert counters(redis) == {
            keys.sends("call", SID): 1,
            keys.sends("account", UNKNOWN_ACCOUNT): 1,
        }


# -- settings --------------------------------------------------------------------------------


class TestSettings:
    def test_the_limits_come_from_the_settings(self) -> None:
        settings = load_settings(code_requests_per_call=2, session_ttl=1800)
        limits = send_limits(settings)
        assert (limits.per_call, limits.call_window) == (2, 1800)
        assert (limits.account, limits.destination, limits.prefix, limits.window) == (
            5,
            5,
            200,
            600,
        )

    @pytest.mark.parametrize("value", ["0", "11", "three"])
    def test_a_bad_per_call_bound_names_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        monkeypatch.setenv("IVR_CODE_REQUESTS_PER_CALL", value)
        with pytest.raises(SettingsError, match=r"^IVR_CODE_REQUESTS_PER_CALL: "):
            load_settings()

    @pytest.mark.parametrize("name", ["send_limit_destination", "send_limit_prefix"])
    def test_a_shared_cap_below_the_account_cap_is_refused(self, name: str) -> None:
        """A lone known account would then be refused sooner than an unknown one."""
        with pytest.raises(SettingsError, match=r"IVR_SEND_LIMIT_ACCOUNT \(5\)"):
            load_settings(**{name: 4})
