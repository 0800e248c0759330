"""Abuse limits (SECURITY 20): failure rates per calling number, per account and globally.

Three layers: the pure rules (which bucket a caller is in, when a limit is crossed, what an
alert line shows); the sliding windows on fakeredis with a controlled clock; and whole calls
through the webhooks, where a spraying number hears the failure route and never an agent.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask

from ivr.auth.abuse import (
    WITHHELD,
    AbuseLimits,
    Pattern,
    Trip,
    alert_line,
    masked,
    number_bucket,
    number_verdict,
)
from ivr.auth.knowledge import enrol
from ivr.errors import SettingsError
from ivr.flows.engine import AuthenticationRefused, CallerInput, CallState, Engine, Hangup, Say
from ivr.flows.loader import load_flow
from ivr.runtime import Runtime
from ivr.settings import ENV_NAMES, load_settings
from ivr.simulator import CallResult
from ivr.store import keys
from ivr.store.abuse import AbuseGuard
from ivr.store.audit import AuditLog
from ivr.store.counters import FailureCounter
from ivr.store.customers import Customer
from tests.conftest import FLOWS_DIR, PlayerFactory, make_app
from tests.support import assert_never_enqueued, audit_events, pin_caller, webhook_bodies

LIMITS = AbuseLimits(
    window=600,
    cooldown=600,
    number_failures=4,
    number_accounts=3,
    withheld_failures=6,
    account_numbers=2,
    global_failures=5,
)
SPRAYER = "+14155550142"
OTHER = "+14155550143"
OTHER_ROUTE = "We could not verify your identity on this call"
DEFAULT_FLOW = load_flow(FLOWS_DIR / "default.yaml")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(redis: Any, clock: Clock) -> AbuseGuard:
    return AbuseGuard(redis, LIMITS, AuditLog(redis), clock)


def audited_alerts(redis: Any) -> list[dict[str, str]]:
    return [e for e in audit_events(redis) if e["event"] == "abuse_alert"]


def call(caller: str, account: str, n: int = 0) -> CallState:
    return CallState(call_sid=f"CA{n:032x}", caller=caller, step="pin", account=account)


def fail(guard: AbuseGuard, state: CallState, customer: str | None = None) -> bool:
    """One failed attempt; False when the number was refused before it was checked."""
    admission = guard.admit(state)
    if admission is None:
        return False
    guard.settle(admission, state, True, customer)
    return True


# -- the pure rules ---------------------------------------------------------------------------


class TestRules:
    @pytest.mark.parametrize("caller", ["+14155550100", "+447700900123", "+4930123456"])
    def test_an_e164_number_is_its_own_bucket(self, caller: str) -> None:
        assert number_bucket(caller) == caller

    @pytest.mark.parametrize(
        "caller",
        ["anonymous", "Anonymous", "+266696687", "+7378742833", "+8656696", "", "restricted",
         "sip:mallory@example.com", "client:alice", "14155550100", "+0123456789", "+1 415 555"],
    )  # fmt: skip
    def test_a_withheld_or_odd_caller_id_shares_one_bucket(self, caller: str) -> None:
        assert number_bucket(caller) == WITHHELD

    def test_a_number_is_masked_in_a_log_line(self) -> None:
        assert masked("+14155550100") == "+1415555****"
        assert masked(WITHHELD) == WITHHELD

    def test_one_more_account_than_allowed_trips(self) -> None:
        tried = ["11111111", "22222222", "33333333"]
        assert number_verdict(tried, "11111111", SPRAYER, LIMITS) is None
        trip = number_verdict(tried, "44444444", SPRAYER, LIMITS)
        assert trip == Trip(Pattern.NUMBER_ACCOUNTS, 4, 3, 600, 600)

    def test_one_more_failure_than_allowed_trips(self) -> None:
        assert number_verdict(["11111111"] * 3, "11111111", SPRAYER, LIMITS) is None
        trip = number_verdict(["11111111"] * 4, "11111111", SPRAYER, LIMITS)
        assert trip == Trip(Pattern.NUMBER_FAILURES, 5, 4, 600, 600)

    def test_the_withheld_bucket_counts_failures_not_accounts(self) -> None:
        many = [f"{n:08d}" for n in range(5)]
        assert number_verdict(many, "99999999", WITHHELD, LIMITS) is None
        trip = number_verdict([*many, "5"], "99999999", WITHHELD, LIMITS)
        assert trip == Trip(Pattern.NUMBER_FAILURES, 7, 6, 600, 600)

    def test_an_alert_line_is_one_key_value_line_with_the_number_masked(self) -> None:
        line = alert_line(Trip(Pattern.NUMBER_ACCOUNTS, 4, 3, 600, 900), SPRAYER, "CA" + "0" * 32)
        assert line == (
            "abuse alert pattern=many_accounts_from_one_number caller=+1415555**** count=4 "
            "limit=3 window=600s action=refused cooldown=900s call_sid=CA" + "0" * 32
        )
        spike = alert_line(Trip(Pattern.GLOBAL_FAILURES, 6, 5, 600), None, "CA" + "0" * 32)
        assert "action=alert" in spike and "caller=" not in spike and "\n" not in spike


DEFAULTS = {
    "IVR_ABUSE_WINDOW": 3600,
    "IVR_ABUSE_COOLDOWN": 3600,
    "IVR_ABUSE_NUMBER_FAILURES": 6,
    "IVR_ABUSE_NUMBER_ACCOUNTS": 3,
    "IVR_ABUSE_WITHHELD_FAILURES": 30,
    "IVR_ABUSE_ACCOUNT_NUMBERS": 3,
    "IVR_ABUSE_GLOBAL_FAILURES": 300,
}


class TestSettings:
    def test_defaults_are_the_documented_ones(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
    ) -> None:
        monkeypatch.chdir(tmp_path)  # no `.env`
        for name in DEFAULTS:
            monkeypatch.delenv(name, raising=False)
        settings = load_settings()
        found = {ENV_NAMES[f]: getattr(settings, f) for f in ENV_NAMES if f.startswith("abuse_")}
        assert found == DEFAULTS
        readme = (FLOWS_DIR.parent / "README.md").read_text(encoding="utf-8")
        for name, default in DEFAULTS.items():
            assert re.search(rf"\| `{name}` \|[^\n]*\| {default} \|", readme), name

    @pytest.mark.parametrize(
        ("field", "bad"),
        [("abuse_window", 59), ("abuse_cooldown", 86401), ("abuse_number_failures", 0),
         ("abuse_number_accounts", 101), ("abuse_withheld_failures", 0),
         ("abuse_account_numbers", 0), ("abuse_global_failures", 0)],
    )  # fmt: skip
    def test_a_value_out_of_bounds_names_the_variable(self, field: str, bad: int) -> None:
        with pytest.raises(SettingsError, match=rf"^{ENV_NAMES[field]}: "):
            load_settings(**{field: bad})


# -- the windows ------------------------------------------------------------------------------


class TestNumberWindow:
    def test_a_number_is_refused_for_the_cooldown_after_its_failures(
        self, guard: AbuseGuard, clock: Clock, redis: Any
    ) -> None:
        state = call(SPRAYER, "11111111")
        assert [fail(guard, state) for _ in range(4)] == [True] * 4
        assert guard.admit(state) is None  # the fifth: over the limit, refused, alert
        clock.now += 599
        assert guard.admit(state) is None  # still cooling down: refused, no second alert
        assert guard.refused(state)
        clock.now += 2
        assert guard.admit(state) is not None  # cool-down over and the failures aged out

        events = audited_alerts(redis)
        assert len(events) == 1, events
        assert events[0]["caller"] == SPRAYER and events[0]["outcome"] == "refused"
        assert events[0]["detail"] == (
            "pattern=many_failures_from_one_number count=5 limit=4 window=600"
        )

    def test_the_alert_is_logged_once_per_trip(
        self, guard: AbuseGuard, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="ivr.abuse")
        for n in range(8):
            fail(guard, call(SPRAYER, f"7{n:07d}", n))
        lines = [r for r in caplog.records if r.name == "ivr.abuse"]
        assert [r.levelno for r in lines] == [logging.WARNING]
        message = lines[0].getMessage()
        assert "pattern=many_accounts_from_one_number" in message
        assert "caller=+1415555****" in message and SPRAYER not in message
        assert "7000000" not in message  # no account is named

    def test_many_accounts_from_one_number_are_refused_at_the_next_account(
        self, guard: AbuseGuard, redis: Any
    ) -> None:
        for account in ("11111111", "22222222", "33333333", "11111111"):
            assert fail(guard, call(SPRAYER, account))
        assert guard.admit(call(SPRAYER, "44444444")) is None
        assert guard.admit(call(SPRAYER, "11111111")) is None  # refused whatever it claims now
        assert [e["detail"].split()[0] for e in audited_alerts(redis)] == [
            "pattern=many_accounts_from_one_number"
        ]

    def test_the_window_slides(self, guard: AbuseGuard, clock: Clock) -> None:
        state = call(SPRAYER, "11111111")
        for _ in range(4):
            assert fail(guard, state)
            clock.now += 100  # failures at 0, 100, 200, 300
        clock.now = clock.now - 400 + 601  # the first has left the 600 s window
        assert fail(guard, state)
        assert guard.admit(state) is None  # the other three and this one are still in it

    def test_a_success_takes_back_only_its_own_attempt(self, guard: AbuseGuard) -> None:
        state = call(SPRAYER, "11111111")
        assert fail(guard, state) and fail(guard, state)
        admission = guard.admit(call(SPRAYER, "22222222"))
        assert admission is not None
        guard.settle(admission, state, False, "22222222")  # the sprayer's own account, right
        assert fail(guard, state) and fail(guard, state)  # the success was not a failure...
        assert guard.admit(state) is None  # ...and cleared none of the earlier ones

    def test_attempts_are_counted_before_they_are_checked(self, guard: AbuseGuard) -> None:
        """Parallel calls from one number, all admitted before any is judged, get no more
        attempts than the limit."""
        admitted = [guard.admit(call(SPRAYER, "11111111", n)) for n in range(10)]
        assert sum(a is not None for a in admitted) == LIMITS.number_failures

    def test_a_provider_outage_is_not_counted(self, guard: AbuseGuard) -> None:
        state = call(SPRAYER, "11111111")
        for _ in range(10):
            admission = guard.admit(state)
            assert admission is not None
            guard.release(admission)

    def test_withheld_caller_ids_share_one_bucket_with_its_own_limit(
        self, guard: AbuseGuard, redis: Any
    ) -> None:
        for n, caller in enumerate(["anonymous", "+266696687", "", "sip:x@example.com"] * 2):
            admitted = fail(guard, call(caller, f"{n:08d}", n))
            assert admitted == (n < LIMITS.withheld_failures), n
        assert guard.admit(call(SPRAYER, "11111111")) is not None  # shown numbers unaffected
        refused = [e for e in audited_alerts(redis) if e["outcome"] == "refused"]
        assert [e["caller"] for e in refused] == [WITHHELD]

    def test_another_number_is_not_affected(self, guard: AbuseGuard) -> None:
        for n in range(6):
            fail(guard, call(SPRAYER, f"{n:08d}", n))
        assert guard.admit(call(SPRAYER, "11111111")) is None
        assert guard.admit(call(OTHER, "11111111")) is not None

    def test_a_number_window_stays_bounded(self, guard: AbuseGuard, redis: Any) -> None:
        for n in range(50):
            fail(guard, call(SPRAYER, "11111111", n))
        assert redis.zcard(keys.abuse_number(SPRAYER)) == LIMITS.number_failures


class TestAlertOnlyWindows:
    def test_one_account_from_many_numbers_alerts_once_and_refuses_nobody(
        self, guard: AbuseGuard, redis: Any
    ) -> None:
        callers = [f"+1415555020{n}" for n in range(5)]
        assert all(fail(guard, call(c, "12345678", n), "12345678") for n, c in enumerate(callers))
        events = audited_alerts(redis)
        assert len(events) == 1, events
        assert events[0]["account"] == "12345678" and events[0]["outcome"] == "alert"
        assert events[0]["detail"].startswith("pattern=one_account_from_many_numbers count=3 ")
        assert "caller" not in events[0]

    def test_an_unknown_account_is_not_watched_for_many_numbers(
        self, guard: AbuseGuard, redis: Any
    ) -> None:
        for n in range(5):
            fail(guard, call(f"+1415555020{n}", "99999999", n), None)
        assert audited_alerts(redis) == []
        assert redis.exists(keys.abuse_account("99999999")) == 0

    def test_a_global_spike_alerts_once_per_window_and_refuses_nobody(
        self, guard: AbuseGuard, clock: Clock, redis: Any
    ) -> None:
        def failures_from_new_numbers(first: int, count: int) -> None:
            for n in range(first, first + count):
                assert fail(guard, call(f"+1415556{n:04d}", f"{n:08d}", n))

        failures_from_new_numbers(0, 20)
        assert [e["detail"] for e in audited_alerts(redis)] == [
            "pattern=global_failure_spike count=6 limit=5 window=600"
        ]
        clock.now += 601
        failures_from_new_numbers(20, 6)
        assert len(audited_alerts(redis)) == 2  # a new window, a new alert
        assert redis.zcard(keys.ABUSE_GLOBAL) == LIMITS.global_failures + 1  # bounded


# -- the engine -------------------------------------------------------------------------------


class RefusingPorts:
    """Ports whose calling number is over its abuse limit: every attempt is refused."""

    def __init__(self) -> None:
        self.verified = 0

    def account_for_caller(self, caller: str) -> str | None:
        return None

    def verify(self, state: CallState, method: str, answer: str | None) -> bool:
        self.verified += 1
        raise AuthenticationRefused

    def request_code(self, state: CallState, method: str) -> Any:
        return "unavailable"

    def delivery_status(self, state: CallState, method: str) -> Any:
        return "failed"

    def request_callback(self, state: CallState, step: str) -> Any:
        return "unavailable"

    def note(self, state: CallState, event: str, **fields: str) -> None:
        pass


class TestEngineRefusal:
    def test_a_refused_attempt_ends_authentication_by_the_failure_route(self) -> None:
        ports = RefusingPorts()
        engine = Engine(DEFAULT_FLOW, ports)
        state = CallState(call_sid="CA" + "1" * 32, caller=SPRAYER, step="pin", account="1234567")
        actions = engine.answer(state, CallerInput(digits="583920"))
        assert actions == [Say(DEFAULT_FLOW.steps["other_route"].say), Hangup()]  # type: ignore[union-attr]
        assert state.ended and state.step == "other_route" and ports.verified == 1
        assert state.failures == DEFAULT_FLOW.authentication.max_failures

    def test_a_refused_caller_with_a_proof_still_never_reaches_an_agent(self) -> None:
        engine = Engine(DEFAULT_FLOW, RefusingPorts())
        state = CallState(
            call_sid="CA" + "2" * 32, caller=SPRAYER, step="service_code", account="12345678",
            proofs=["pin"],
        )  # fmt: skip
        actions = engine.answer(state, CallerInput(digits="12345678"))
        assert actions == [Say(DEFAULT_FLOW.steps["other_route"].say), Hangup()]  # type: ignore[union-attr]
        assert state.ended and engine.answer(state, CallerInput(digits="0")) == [Hangup()]


# -- whole calls through the webhooks ---------------------------------------------------------

SPRAYED_PIN = "583920"
ACCOUNTS = [f"5000000{n}" for n in range(6)]  # only the last one uses the sprayed PIN
VICTIM, VICTIM_PHONE = ACCOUNTS[-1], "+14155550188"


@pytest.fixture
def bank(runtime: Runtime) -> list[str]:
    """Six accounts; only the last one's PIN is the sprayed one."""
    for n, account in enumerate(ACCOUNTS):
        pin = SPRAYED_PIN if account == VICTIM else f"90271{n}"
        phone = VICTIM_PHONE if account == VICTIM else f"+1415555030{n}"
        hashed = enrol(runtime.hasher, "pin", pin)
        runtime.customers.add(Customer(account=account, phone=phone, pin_hash=hashed))
    return ACCOUNTS


class TestSprayingCalls:
    def spray(self, player: PlayerFactory, app: Flask, accounts: list[str]) -> list[CallResult]:
        return [
            player(from_number=SPRAYER, app=app).play(pin_caller(a, SPRAYED_PIN)) for a in accounts
        ]

    def test_a_spraying_number_is_refused_even_for_the_account_it_would_open(
        self,
        bank: list[str],
        app: Flask,
        runtime: Runtime,
        player: PlayerFactory,
        redis: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.WARNING, logger="ivr.abuse")
        results = self.spray(player, app, bank)
        allowed = runtime.settings.abuse_number_accounts  # the default, 3
        assert len(bank) > allowed + 1

        for result in results:
            assert_never_enqueued(result)
            assert result.said(OTHER_ROUTE) or result.said("did not match"), result.transcript()
        refused = results[allowed:]  # from the first account over the limit on
        assert all(r.said(OTHER_ROUTE) and not r.said("did not match") for r in refused)
        answers = {webhook_bodies(r)[-1] for r in refused}
        assert len(answers) == 1, answers  # byte-identical for every refused call

        # Refused unchecked and uncounted: the victim's PIN never met argon2 or the lockout.
        victim_call = results[-1]
        assert [
            (e["method"], e["outcome"])
            for e in audit_events(redis, victim_call.call_sid)
            if e["event"] == "authenticate"
        ] == [("pin", "refused")]
        assert FailureCounter(redis).count(VICTIM, "pin") == 0

        warnings = [r.getMessage() for r in caplog.records if r.name == "ivr.abuse"]
        assert len(warnings) == 1, warnings
        assert "pattern=many_accounts_from_one_number" in warnings[0]
        assert "caller=+1415555****" in warnings[0]
        for secret in (SPRAYER, SPRAYED_PIN, *bank):
            assert secret not in warnings[0]
        events = [e for e in audit_events(redis) if e["event"] == "abuse_alert"]
        assert len(events) == 1 and events[0]["caller"] == SPRAYER
        assert events[0]["call_sid"] == results[allowed].call_sid

    def test_refused_sounds_like_a_spent_budget(
        self, bank: list[str], app: Flask, player: PlayerFactory
    ) -> None:
        refused = self.spray(player, app, bank)[-1]
        spent = player(from_number=OTHER, app=app).play(pin_caller(bank[0], "111111", "222222"))
        assert webhook_bodies(refused)[-1] == webhook_bodies(spent)[-1]

    def test_the_customer_calling_from_their_own_number_is_not_affected(
        self, bank: list[str], app: Flask, player: PlayerFactory
    ) -> None:
        self.spray(player, app, bank)
        own = player(from_number=VICTIM_PHONE, app=app).play(pin_caller(VICTIM, SPRAYED_PIN))
        assert own.outcome == "enqueued" and own.queue == "balances", own.transcript()

    def test_without_the_limits_the_spray_finds_its_account(
        self, bank: list[str], redis: Any, outbox_path: Any, player: PlayerFactory
    ) -> None:
        """What the limits stop: a limit above the run lets the sprayed PIN in."""
        lax = make_app(redis, outbox=outbox_path, abuse_number_accounts=100)
        assert self.spray(player, lax, bank)[-1].outcome == "enqueued"

    def test_a_refused_number_gets_no_code_sent(
        self, bank: list[str], app: Flask, player: PlayerFactory, runtime: Runtime
    ) -> None:
        self.spray(player, app, bank)
        ports = runtime.engine.ports
        state = call(SPRAYER, VICTIM)
        assert ports.request_code(state, "sms_otp", 12) == "unavailable"
        assert ports.request_callback(state, "call_back") == "unavailable"
        assert runtime.redis.keys("rq:job:*") == []
        other = replace(state, caller=OTHER)
        assert ports.request_code(other, "sms_otp", 12) == "queued"
