"""The audit trail of whole calls (SECURITY 23): every event, in order, with no secret in it.

Each call is played through the real app on fakeredis; the trail is read back twice, from the
stream (`ivr:audit`) and from the JSON lines the logger `ivr.audit` wrote, and both are searched
for what must never be there: PIN digits, the one-time code, the digits of an account that
matched nothing, a spoken passcode.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fakeredis import TcpFakeServer
from flask import Flask
from redis import Redis

from ivr.assurance import Assurance
from ivr.audit_view import Query, parse_since, table
from ivr.auth import claims
from ivr.cli import cli
from ivr.flows import trail
from ivr.flows.engine import CallerInput, CallState, Engine, Enqueue
from ivr.flows.loader import load_flow
from ivr.outbox import Outbox
from ivr.simulator import CallResult, Keys, Speech
from ivr.simulator.phone import Phone
from ivr.store.audit import LOGGER, AuditLog, log_line
from ivr.store.server import find_free_port
from tests.conftest import (
    ALICE,
    CODE_KEY,
    REPO_ROOT,
    DemoCustomer,
    PlayerFactory,
    make_app,
    run_jobs,
)
from tests.support import audit_events, contains_code, queue_caller, redis_contents

DEFAULT_FLOW = load_flow(REPO_ROOT / "flows" / "default.yaml")
WRONG_PIN = "274061"
OTHER_WRONG_PIN = "650193"
NOBODY = "73950412"  # an account number nobody has
SPOKEN = "purple elephant"  # a passcode guess, as the caller says it

# (event, method, outcome) of each step of a call, as the trail must show them.
PIN_SUCCESS = [
    ("call_started", "", ""),
    ("identify", "", "matched"),
    ("offered", "pin", ""),
    ("authenticate", "pin", "success"),
    ("enqueued", "pin", ""),
]


def trail_of(events: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    return [(e["event"], e.get("method", ""), e.get("outcome", "")) for e in events]


def json_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    """The audit lines as the log has them: each message parses as one JSON object."""
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == LOGGER]


def assert_nothing_secret(redis: Any, lines: list[dict[str, str]], *secrets: str) -> None:
    stream = "\n".join(json.dumps(e) for e in audit_events(redis))
    logged = "\n".join(json.dumps(line) for line in lines)
    assert stream and logged
    for secret in secrets:
        assert not contains_code(stream, secret), f"{secret} in the audit stream"
        assert not contains_code(logged, secret), f"{secret} in the audit log lines"
    assert not contains_code(redis_contents(redis), NOBODY)  # nor anywhere else in Redis


def assert_log_matches_stream(redis: Any, lines: list[dict[str, str]]) -> None:
    """The log holds the stream's events, field for field, personal values masked."""
    stream = audit_events(redis)
    assert [set(line) for line in lines] == [set(e) for e in stream]
    assert [json.loads(log_line(e)) for e in stream] == lines
    for entry, line in zip(stream, lines, strict=True):
        for name in ("event", "at", "call_sid", "method", "outcome", "queue", "assurance"):
            assert line.get(name) == entry.get(name)


@pytest.fixture
def audit_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


class TestWholeCalls:
    def test_a_pin_call_to_the_balance_queue(
        self,
        player: PlayerFactory,
        redis: Any,
        customers: dict[str, DemoCustomer],
        audit_log: pytest.LogCaptureFixture,
    ) -> None:
        call = player()
        result = call.play(
            _answers(Keys(f"{ALICE.account}#"), Keys("1"), Keys(f"{ALICE.pin}#"), Keys("1"))
        )
        assert result.queue == "balances", result.transcript()

        events = audit_events(redis, call.call_sid)
        assert trail_of(events) == PIN_SUCCESS
        started, identify, offered, _, enqueued = events
        assert started["caller"] == "+15005550006" and "account" not in started
        assert (identify["account"], identify["detail"]) == (ALICE.account, "keyed")
        assert offered["detail"] == "step=pin"
        assert (enqueued["queue"], enqueued["assurance"]) == ("balances", "one_factor")
        lines = json_lines(audit_log)
        assert_log_matches_stream(redis, lines)
        assert_nothing_secret(redis, lines, ALICE.pin)
        assert {line["account"] for line in lines if "account" in line} == {"****5678"}
        assert {line["caller"] for line in lines if "caller" in line} == {"+1500555****"}

    def test_two_failures_and_a_lockout(
        self, redis: Any, outbox_path: Path, audit_log: pytest.LogCaptureFixture
    ) -> None:
        app = make_app(redis, outbox=outbox_path, account_max_failures=2)
        _enrol(app, ALICE)
        call = _player(app)
        result = call.play(
            _answers(
                Keys(f"{ALICE.account}#"),
                Keys("1"),
                Keys(f"{WRONG_PIN}#"),
                Keys("2"),
                Speech(SPOKEN, 0.9),
            )
        )
        assert result.outcome == "hung_up" and result.said("could not verify"), result.transcript()
        assert trail_of(audit_events(redis, call.call_sid)) == [
            ("call_started", "", ""),
            ("identify", "", "matched"),
            ("offered", "pin", ""),
            ("authenticate", "pin", "failure"),
            ("offered", "passcode", ""),
            ("authenticate", "passcode", "failure"),
        ]
        # The next call keys a wrong PIN again: the second failure in a row locks the PIN.
        again = _player(app)
        again.play(_answers(Keys(f"{ALICE.account}#"), Keys("1"), Keys(f"{OTHER_WRONG_PIN}#")))
        assert trail_of(audit_events(redis, again.call_sid))[3:] == [
            ("authenticate", "pin", "failure_locked_now"),
            ("lockout", "pin", "locked"),
        ]
        lines = json_lines(audit_log)
        assert_log_matches_stream(redis, lines)
        assert_nothing_secret(redis, lines, WRONG_PIN, OTHER_WRONG_PIN, SPOKEN, "purpleelephant")

    def test_an_sms_step_up_to_card_services(
        self,
        player: PlayerFactory,
        redis: Any,
        customers: dict[str, DemoCustomer],
        worker_env: Path,
        audit_log: pytest.LogCaptureFixture,
    ) -> None:
        phone = Phone(Outbox(worker_env))

        call = player(pause_scale=0, observer=_worker_at_hold(redis))
        result = call.play(
            queue_caller(ALICE.account, ALICE.pin, "card-services by sms", phone.latest_code)
        )
        assert result.queue == "card-services", result.transcript()
        code = phone.latest_code()
        assert code is not None

        events = audit_events(redis, call.call_sid)
        assert trail_of(events) == [
            *PIN_SUCCESS[:4],
            ("step_up", "sms_otp", ""),
            ("offered", "sms_otp", ""),
            ("delivery", "sms_otp", "send_requested"),
            ("delivery", "sms_otp", "sent"),
            ("authenticate", "sms_otp", "success"),
            ("enqueued", "pin,sms_otp", ""),
        ]
        step_up = events[4]
        assert (step_up["assurance"], step_up["detail"]) == ("one_factor", "step=sms_code")
        assert (events[-1]["queue"], events[-1]["assurance"]) == ("card-services", "two_factor")
        lines = json_lines(audit_log)
        assert_log_matches_stream(redis, lines)
        assert_nothing_secret(redis, lines, ALICE.pin, code)

    def test_an_account_nobody_has(
        self,
        player: PlayerFactory,
        redis: Any,
        customers: dict[str, DemoCustomer],
        audit_log: pytest.LogCaptureFixture,
    ) -> None:
        call = player()
        call.play(_answers(Keys(f"{NOBODY}#"), Keys("1"), Keys(f"{WRONG_PIN}#")))
        events = audit_events(redis, call.call_sid)
        assert trail_of(events)[:4] == [
            ("call_started", "", ""),
            ("identify", "", "unmatched"),
            ("offered", "pin", ""),
            ("authenticate", "pin", "failure_unknown_account"),
        ]
        claim = claims.unmatched_claim(CODE_KEY, NOBODY)
        assert {e["account"] for e in events if "account" in e} == {claim}
        lines = json_lines(audit_log)
        assert {line["account"] for line in lines if "account" in line} == {claim}
        assert_log_matches_stream(redis, lines)
        assert_nothing_secret(redis, lines, NOBODY, WRONG_PIN)

    def test_a_number_over_its_abuse_limit(
        self, redis: Any, outbox_path: Path, audit_log: pytest.LogCaptureFixture
    ) -> None:
        app = make_app(redis, outbox=outbox_path, abuse_number_failures=1)
        _enrol(app, ALICE)
        # One failure is allowed from the number; its next attempt, in the next call, is not.
        _player(app, from_number="+14155550142").play(
            _answers(Keys(f"{ALICE.account}#"), Keys("1"), Keys(f"{WRONG_PIN}#"))
        )
        again = _player(app, from_number="+14155550142")
        again.play(_answers(Keys(f"{ALICE.account}#"), Keys("1"), Keys(f"{OTHER_WRONG_PIN}#")))
        assert trail_of(audit_events(redis, again.call_sid))[3:] == [
            ("abuse_alert", "", "refused"),
            ("authenticate", "pin", "refused"),
        ]
        lines = json_lines(audit_log)
        (alert,) = [line for line in lines if line["event"] == "abuse_alert"]
        assert alert["caller"] == "+1415555****"
        assert alert["detail"].startswith("pattern=many_failures_from_one_number ")
        assert_log_matches_stream(redis, lines)
        assert_nothing_secret(redis, lines, WRONG_PIN, OTHER_WRONG_PIN)


class TestDeliveriesNotMade:
    """A send that never reaches anyone is on the trail as what happened to it."""

    @pytest.fixture
    def reidentify(self, redis: Any, outbox_path: Path) -> Flask:
        """Offers an emailed code right after the claim, before any secret."""
        app = make_app(
            redis, outbox=outbox_path, flows_dir=REPO_ROOT / "tests" / "flows", flow="reidentify"
        )
        _enrol(app, ALICE)
        return app

    def test_a_code_for_an_account_nobody_has_is_not_sent(
        self, reidentify: Flask, redis: Any, worker_env: Path
    ) -> None:
        call = _player(reidentify, pause_scale=0, observer=_worker_at_hold(redis))
        call.play(_answers(Keys(f"{NOBODY}#"), Keys("1"), Keys(f"{WRONG_PIN}#")))
        assert trail_of(audit_events(redis, call.call_sid))[1:6] == [
            ("identify", "", "unmatched"),
            ("offered", "email_otp", ""),
            ("delivery", "email_otp", "send_requested"),
            ("delivery", "email_otp", "not_sent"),
            ("authenticate", "email_otp", "failure_unknown_account"),
        ]

    def test_a_hold_that_runs_out_abandons_the_send(
        self, reidentify: Flask, redis: Any, worker_env: Path
    ) -> None:
        call = _player(reidentify, pause_scale=0)  # and no worker: the code never goes out
        result = call.play(_answers(Keys(f"{ALICE.account}#"), Keys("1")))
        assert result.said("we cannot send an email right now"), result.transcript()
        run_jobs(redis)  # the worker comes back: the send is void, and nothing more happens
        assert trail_of(audit_events(redis, call.call_sid))[1:] == [
            ("identify", "", "matched"),
            ("offered", "email_otp", ""),
            ("delivery", "email_otp", "send_requested"),
            ("delivery", "email_otp", "abandoned"),
        ]
        assert Outbox(worker_env).messages() == []


class NotingPorts:
    """Alice's PIN is right; every note the engine hands over is kept, in order."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, dict[str, str]]] = []

    def account_for_caller(self, caller: str) -> str | None:
        return ALICE.account if caller == ALICE.phone else None

    def claim(self, digits: str) -> str:
        return digits if digits == ALICE.account else "unmatched-0"

    def drop_claim(self, state: CallState) -> None:
        pass

    def verify(self, state: CallState, method: str, answer: str | None) -> bool:
        return state.account == ALICE.account and answer == ALICE.pin

    def note(self, state: CallState, event: str, **fields: str) -> None:
        self.notes.append((event, fields))


class TestEngineNotes:
    def test_a_caller_id_claim_a_pin_and_the_queue(self) -> None:
        ports = NotingPorts()
        engine, flow = Engine(DEFAULT_FLOW, ports), DEFAULT_FLOW
        state = CallState(call_sid="CA1", caller=ALICE.phone, step=flow.start)
        engine.start(state)
        for given in ("*", "1", ALICE.pin, "1"):
            engine.answer(state, CallerInput(digits=given))
        assert ports.notes == [
            ("identify", {"detail": "caller_id"}),
            ("offered", {"method": "pin", "detail": "step=pin"}),
            ("enqueued", {"queue": "balances", "assurance": "one_factor", "method": "pin"}),
        ]

    def test_a_retried_question_is_not_offered_again(self) -> None:
        ports = NotingPorts()
        engine = Engine(DEFAULT_FLOW, ports)
        state = CallState(call_sid="CA1", caller=ALICE.phone, step=DEFAULT_FLOW.start)
        engine.start(state)
        engine.answer(state, CallerInput(digits="*"))
        engine.answer(state, CallerInput(digits="1"))
        engine.answer(state, CallerInput())  # silence at the PIN prompt: asked again
        engine.repeat(state)  # a stale request: the same question again
        assert [event for event, _ in ports.notes] == ["identify", "offered"]

    def test_a_shut_door_is_noted_and_the_call_goes_elsewhere(self) -> None:
        ports = NotingPorts()
        engine = Engine(DEFAULT_FLOW, ports)
        # At the main menu with a claim and no proof, as no flow that passes its checks allows.
        state = CallState(call_sid="CA1", caller=ALICE.phone, step="main_menu")
        state.account = ALICE.account
        actions = engine.answer(state, CallerInput(digits="1"))
        assert not any(isinstance(a, Enqueue) for a in actions)
        assert ports.notes == [
            ("enqueue_refused", {"queue": "balances", "assurance": "identified"})
        ]


class TestNotes:
    """What the engine hands its ports: pure, so the rule for a step-up is tested alone."""

    def test_a_factor_asked_of_an_unproven_caller_is_only_offered(self) -> None:
        assert trail.offered(Assurance.identified, "pin", "pin") == [
            ("offered", {"method": "pin", "detail": "step=pin"})
        ]

    def test_a_factor_asked_after_one_is_proved_is_a_step_up(self) -> None:
        notes = trail.offered(Assurance.one_factor, "sms_code", "sms_otp")
        assert [event for event, _ in notes] == ["step_up", "offered"]
        assert notes[0][1]["assurance"] == "one_factor"

    def test_a_shut_door_names_the_queue_and_the_level(self) -> None:
        assert trail.door_shut(Assurance.identified, "card-services") == [
            ("enqueue_refused", {"queue": "card-services", "assurance": "identified"})
        ]


class TestLogLine:
    def test_personal_values_are_masked_and_nothing_else(self) -> None:
        entry = {
            "event": "agent_read",
            "at": "1.000",
            "call_sid": "CA" + "0" * 32,
            "account": "12345678",
            "caller": "sip:+14155550100@pbx.example",
            "agent": "ada",
            "role": "specialist",
            "outcome": "allowed",
        }
        line = json.loads(log_line(entry))
        assert line == {
            **entry,
            "account": "****5678",
            "caller": "sip:+1415555****@pbx.example",
        }

    def test_an_unmatched_claim_is_logged_as_it_is(self) -> None:
        claim = claims.unmatched_claim(CODE_KEY, NOBODY)
        assert json.loads(log_line({"event": "identify", "account": claim}))["account"] == claim

    def test_a_field_outside_the_list_is_refused(self, redis: Any) -> None:
        with pytest.raises(ValueError, match="not allowed"):
            AuditLog(redis).record("authenticate", pin="583920")  # type: ignore[arg-type]
        assert audit_events(redis) == []


class TestView:
    def test_since_takes_seconds_minutes_hours_days(self) -> None:
        assert [parse_since(t) for t in ("90s", "30m", "1h", "2d")] == [90, 1800, 3600, 172800]

    @pytest.mark.parametrize("bad", ["5x", "", "h", "1.5h", "-1h", "0m", "1 h 2"])
    def test_since_refuses_anything_else(self, bad: str) -> None:
        with pytest.raises(ValueError, match="--since"):
            parse_since(bad)

    def test_a_query_keeps_one_call_or_one_claim(self) -> None:
        sid = "CA" + "a" * 32
        assert Query(sid)({"call_sid": sid}) and not Query(sid)({"call_sid": "CA" + "b" * 32})
        assert Query(account="1")({"account": "1"}) and not Query(account="1")({})
        with pytest.raises(ValueError, match="CALL"):
            Query("12345678")

    def test_the_table_names_who_once_per_call_and_reads_agent_reads(self) -> None:
        sid = "CA" + "a" * 32
        events = [
            ("1-0", {"event": "call_started", "at": "0", "call_sid": sid, "caller": "+1"}),
            ("2-0", {"event": "identify", "at": "1", "call_sid": sid, "caller": "+1",
                     "account": "42", "outcome": "matched", "detail": "keyed"}),
            ("3-0", {"event": "offered", "at": "2", "call_sid": sid, "caller": "+1",
                     "account": "42", "method": "pin", "detail": "step=pin"}),
            ("4-0", {"event": "agent_read", "call_sid": sid, "agent": "ada",
                     "role": "agent", "ref": "r3f", "outcome": "refused"}),
        ]  # fmt: skip
        assert table(events, with_call=False) == [
            "time (UTC)               event         method  outcome  detail",
            "1970-01-01 00:00:00.000  call_started                   caller=+1",
            "1970-01-01 00:00:01.000  identify              matched  account=42 keyed",
            "1970-01-01 00:00:02.000  offered       pin              step=pin",
            "1970-01-01 00:00:00.004  agent_read            refused  agent=ada role=agent ref=r3f",
        ]


@pytest.fixture(scope="module")
def two_calls(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, CallResult, CallResult]]:
    """Two calls played on a fake Redis the command then reaches by URL, as it would a real one:
    Alice's PIN call, and a call for an account nobody has."""
    port = find_free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{port}/0"
    outbox = tmp_path_factory.mktemp("outbox") / "outbox.jsonl"
    try:
        with Redis.from_url(url) as conn:
            app = make_app(conn, outbox=outbox)
            _enrol(app, ALICE)
            first = _player(app).play(
                _answers(Keys(f"{ALICE.account}#"), Keys("1"), Keys(f"{ALICE.pin}#"), Keys("1"))
            )
            second = _player(app).play(
                _answers(Keys(f"{NOBODY}#"), Keys("1"), Keys(f"{WRONG_PIN}#"))
            )
        yield url, first, second
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class TestAuditCommand:
    @pytest.fixture
    def played(
        self,
        two_calls: tuple[str, CallResult, CallResult],
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> tuple[CallResult, CallResult]:
        url, first, second = two_calls
        monkeypatch.chdir(tmp_path)  # no .env or .ivr/ of the checkout
        monkeypatch.setenv("REDIS_URL", url)
        return first, second

    def test_one_call_as_a_table(self, played: tuple[CallResult, CallResult]) -> None:
        first, _ = played
        out = CliRunner().invoke(cli, ["audit", first.call_sid])
        assert out.exit_code == 0, out.output
        header, *rows = out.output.splitlines()
        assert header.split() == ["time", "(UTC)", "event", "method", "outcome", "detail"]
        assert [row.split()[2] for row in rows] == [e for e, _, _ in PIN_SUCCESS]
        assert "queue=balances assurance=one_factor" in rows[-1]
        assert ALICE.pin not in out.output

    def test_an_account_as_json_lines(self, played: tuple[CallResult, CallResult]) -> None:
        _, second = played
        claim = claims.unmatched_claim(CODE_KEY, NOBODY)
        out = CliRunner().invoke(cli, ["audit", "--account", claim, "--json", "--since", "1h"])
        assert out.exit_code == 0, out.output
        events = [json.loads(line) for line in out.output.splitlines()]
        assert {e["call_sid"] for e in events} == {second.call_sid}
        assert [e["event"] for e in events] == ["identify", "offered", "authenticate"]
        assert all(e["id"] for e in events)

    def test_all_calls_newest_n_with_their_call(
        self, played: tuple[CallResult, CallResult]
    ) -> None:
        first, second = played
        out = CliRunner().invoke(cli, ["audit", "-n", "3"])
        assert out.exit_code == 0, out.output
        rows = out.output.splitlines()[1:]
        assert len(rows) == 3 and all(row.split()[2] == second.call_sid for row in rows)
        assert first.call_sid not in out.output

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--since", "5x"], "Error: --since: '5x' is not a duration"),
            (["-n", "0"], "Error: -n: 0 is not a count"),
            (["12345678"], "Error: CALL: '12345678' is not a call SID"),
        ],
    )
    def test_bad_input_is_one_line(
        self, played: tuple[CallResult, CallResult], args: list[str], message: str
    ) -> None:
        out = CliRunner().invoke(cli, ["audit", *args])
        assert out.exit_code != 0
        assert out.output.splitlines() == [out.output.strip()]
        assert out.output.startswith(message), out.output

    def test_nothing_matching_says_so(self, played: tuple[CallResult, CallResult]) -> None:
        out = CliRunner().invoke(cli, ["audit", "CA" + "f" * 32])
        assert out.exit_code == 0 and "no audit events match" in out.output


def _answers(*answers: Keys | Speech) -> Any:
    """Answer each question in turn, then stay silent until the IVR hangs up."""
    from ivr.simulator import scripted

    return scripted(*answers, None, None, None, None)


def _enrol(app: Flask, who: DemoCustomer) -> None:
    from ivr.runtime import runtime
    from tests.conftest import enrol

    with app.app_context():
        enrol(runtime(), who)


def _player(app: Flask, from_number: str = "+15005550006", **options: Any) -> Any:
    from ivr.simulator import WsgiTransport
    from tests.conftest import BASE_URL, TOKEN
    from tests.support import make_player

    return make_player(BASE_URL, TOKEN, WsgiTransport(app), from_number=from_number, **options)


def _worker_at_hold(redis: Any) -> Any:
    """A player's observer that runs the queued jobs whenever the caller is put on hold."""

    def observe(kind: str, line: str) -> None:
        if kind == "pause":
            run_jobs(redis)

    return observe
