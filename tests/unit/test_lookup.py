"""Twilio Lookup of the number on file before an SMS code (issue 7, item 6b), checked at the HTTP
boundary of the official `twilio` client: `TwilioHttpClient.request` answers with Twilio-shaped
JSON, and everything else runs for real (the app on fakeredis, the send job in rq's
SimpleWorker while the simulated caller holds, settings from the environment).

A landline on file, or a SIM changed within IVR_SIM_SWAP_WINDOW, gets no code: the caller hears
that no text can be sent to the number on file and is offered another way. A failed lookup
refuses nothing. Answers are cached per number; with IVR_LOOKUP off nothing is asked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from ivr.errors import SettingsError
from ivr.lookup import LOOKUP_TIMEOUT
from ivr.outbox import Outbox
from ivr.runtime import Runtime
from ivr.settings import ENV_NAMES, load_settings
from ivr.simulator import CallResult
from ivr.simulator.phone import Phone
from tests.conftest import ALICE, BOB, TOKEN, PlayerFactory, enrol, make_app, run_jobs
from tests.support import TwilioHttp, audit_events, queue_caller, runtime_of

ACCOUNT_SID = "AC" + "c0ffee00" * 4
WORKFLOW = "WW" + "4d" * 16
OTHER_PHONE = "+14155550123"  # Alice calls from a phone that is not on file
LOOKUP_URL = f"https://lookups.twilio.com/v2/PhoneNumbers/{ALICE.phone}"
LOOKUP_ON = {"lookup": "on", "twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": TOKEN}
NO_TEXT = "Sorry, we cannot send a text message to the phone number on file."
CARD_CHECK = "Card changes need one more check."
CARD_SERVICES = "Connecting you to our card services team."


def answer(line: str | None = "mobile", swapped: datetime | None = None) -> tuple[int, Any]:
    """Lookup's answer for Alice's number: the line type, and the last SIM change if any."""
    return 200, {
        "calling_country_code": "1",
        "country_code": "US",
        "phone_number": ALICE.phone,
        "national_format": "(415) 555-0100",
        "valid": True,
        "line_type_intelligence": {
            "carrier_name": "Example Wireless",
            "error_code": None,
            "mobile_country_code": "310",
            "mobile_network_code": "260",
            "type": line,
        },
        "sim_swap": {
            "last_sim_swap": {
                "last_sim_swap_date": swapped.strftime("%Y-%m-%dT%H:%M:%SZ") if swapped else None,
                "swapped_period": "PT720H",
                "swapped_in_period": swapped is not None,
            },
            "carrier_name": "Example Wireless",
            "error_code": None,
        },
        "url": LOOKUP_URL,
    }


@pytest.fixture
def twilio(monkeypatch: pytest.MonkeyPatch) -> TwilioHttp:
    return TwilioHttp().install(monkeypatch)


@pytest.fixture
def ivr(redis: Any, worker_env: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Flask]:
    """`ivr(**fields)`: the same settings for the worker's environment and the web app (with a
    TaskRouter workflow, so the task shows the signals); Alice and Bob enrolled."""

    def make(**fields: str) -> Flask:
        for name, value in fields.items():
            monkeypatch.setenv(ENV_NAMES[name], value)
        app = make_app(redis, outbox=worker_env, taskrouter_workflow_sid=WORKFLOW, **fields)
        enrol(runtime_of(app), ALICE)
        enrol(runtime_of(app), BOB)
        return app

    return make


def text_me(app: Flask, player: PlayerFactory, outbox: Path) -> CallResult:
    """Alice, from another phone, proves her PIN and asks for a texted code; the worker runs at
    each hold. If no text can go, she says nothing more at the card check."""
    phone = Phone(Outbox(outbox))

    def observer(kind: str, line: str) -> None:
        if kind == "pause":
            run_jobs(rt.redis)

    rt = runtime_of(app)
    caller = queue_caller(ALICE.account, ALICE.pin, "card-services by sms", phone.latest_code)
    asked: list[str] = []

    def once(gather: Any, heard: list[str]) -> Any:
        if heard and heard[-1].startswith(CARD_CHECK):
            asked.append("card_check")
            if len(asked) > 1:
                return None  # offered another way: she hangs up
        return caller(gather, heard)

    return player(OTHER_PHONE, app=app, pause_scale=0, observer=observer).play(once)


def offered_another_way(result: CallResult) -> bool:
    """The caller heard that no text can go to the number on file, then the card check."""
    heard = result.heard
    told = [i for i, text in enumerate(heard) if text == NO_TEXT]
    return bool(told) and heard[told[0] + 1].startswith(CARD_CHECK)


def texts(outbox: Path) -> list[str]:
    return [m.to for m in Outbox(outbox).messages() if m.channel == "sms"]


def signal_events(rt: Runtime) -> list[dict[str, str]]:
    return [e for e in audit_events(rt.redis) if e["event"] == "signals"]


class TestLandline:
    def test_no_text_to_a_landline_on_file_and_the_caller_hears_so(
        self, ivr: Any, twilio: TwilioHttp, player: PlayerFactory, worker_env: Path
    ) -> None:
        app = ivr(**LOOKUP_ON)
        rt = runtime_of(app)
        twilio.answer(answer("landline"))

        result = text_me(app, player, worker_env)

        assert texts(worker_env) == []
        assert offered_another_way(result)
        assert result.outcome != "enqueued"
        # one lookup, of the number on file (not the number that called), through the client
        (sent,) = twilio.sent
        assert (sent.method, sent.url) == ("GET", LOOKUP_URL)
        assert sent.params == {"Fields": "line_type_intelligence,sim_swap"}
        assert sent.auth == (ACCOUNT_SID, TOKEN)
        assert sent.client_timeout == LOOKUP_TIMEOUT
        (event,) = signal_events(rt)
        assert event["outcome"] == "refused"
        assert event["detail"] == "line_type=landline sim_swap=none"
        assert event["account"] == ALICE.account
        delivery = [e for e in audit_events(rt.redis) if e.get("outcome") == "failed"]
        assert delivery and "landline" in delivery[0]["detail"]
        assert ALICE.phone not in json.dumps(audit_events(rt.redis))

    def test_a_mobile_gets_its_code_and_the_task_shows_the_signals(
        self, ivr: Any, twilio: TwilioHttp, player: PlayerFactory, worker_env: Path
    ) -> None:
        app = ivr(**LOOKUP_ON)
        rt = runtime_of(app)
        twilio.answer(answer("mobile"))

        result = text_me(app, player, worker_env)

        assert texts(worker_env) == [ALICE.phone]
        assert result.outcome == "enqueued", result.transcript()
        assert result.heard[-1] == CARD_SERVICES
        assert result.enqueue is not None and result.enqueue.attributes is not None
        assert result.enqueue.attributes["signals"] == {
            "attestation": "absent",
            "line_type": "mobile",
            "sim_swap": "none",
        }
        assert [e["outcome"] for e in signal_events(rt)] == ["allowed"]


class TestSimSwap:
    def test_a_sim_changed_two_days_ago_gets_no_code(
        self, ivr: Any, twilio: TwilioHttp, player: PlayerFactory, worker_env: Path
    ) -> None:
        app = ivr(**LOOKUP_ON)
        rt = runtime_of(app)
        twilio.answer(answer("mobile", swapped=datetime.now(UTC) - timedelta(days=2)))

        result = text_me(app, player, worker_env)

        assert texts(worker_env) == []
        assert offered_another_way(result)
        assert "SIM" not in " ".join(result.heard)  # the caller is never told why
        (event,) = signal_events(rt)
        assert (event["outcome"], event["detail"]) == (
            "refused",
            "line_type=mobile sim_swap=recent",
        )

    def test_outside_a_shorter_window_the_same_change_does_not_refuse(
        self, ivr: Any, twilio: TwilioHttp, player: PlayerFactory, worker_env: Path
    ) -> None:
        app = ivr(**LOOKUP_ON, sim_swap_window="86400")
        twilio.answer(answer("mobile", swapped=datetime.now(UTC) - timedelta(days=2)))

        result = text_me(app, player, worker_env)

        assert texts(worker_env) == [ALICE.phone]
        assert result.outcome == "enqueued", result.transcript()


class TestLookupFails:
    @pytest.mark.parametrize(
        "failure",
        [
            (500, {"code": 20500, "message": "Internal error", "status": 500}),
            (
                403,
                {"code": 60606, "message": f"Package not enabled for {ALICE.phone}", "status": 403},
            ),
            OSError("connection reset"),
        ],
    )
    def test_a_failed_lookup_refuses_nothing_and_is_not_kept(
        self,
        ivr: Any,
        twilio: TwilioHttp,
        player: PlayerFactory,
        worker_env: Path,
        failure: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        app = ivr(**LOOKUP_ON)
        rt = runtime_of(app)
        twilio.answer(failure)

        result = text_me(app, player, worker_env)

        assert texts(worker_env) == [ALICE.phone]
        assert result.outcome == "enqueued", result.transcript()
        (event,) = signal_events(rt)
        assert (event["outcome"], event["detail"]) == (
            "allowed",
            "line_type=unknown sim_swap=unknown",
        )
        assert rt.redis.keys("ivr:lookup:*") == []
        assert ALICE.phone not in caplog.text  # Twilio's text may quote the number


class TestCache:
    def test_one_lookup_per_number_within_the_ttl(
        self, ivr: Any, twilio: TwilioHttp, player: PlayerFactory, worker_env: Path
    ) -> None:
        app = ivr(**LOOKUP_ON)
        rt = runtime_of(app)
        twilio.answer(answer("mobile"))

        first = text_me(app, player, worker_env)
        second = text_me(app, player, worker_env)

        assert first.outcome == second.outcome == "enqueued"
        assert len(twilio.sent) == 1
        assert texts(worker_env) == [ALICE.phone, ALICE.phone]
        assert 0 < rt.redis.ttl(f"ivr:lookup:{ALICE.phone}") <= rt.settings.lookup_ttl
        cached = rt.redis.get(f"ivr:lookup:{ALICE.phone}")
        assert b"Example Wireless" in cached  # the two packages asked for, nothing else
        assert b"national_format" not in cached


class TestOff:
    def test_without_ivr_lookup_nothing_is_asked(
        self, ivr: Any, twilio: TwilioHttp, player: PlayerFactory, worker_env: Path
    ) -> None:
        app = ivr(twilio_account_sid=ACCOUNT_SID)
        rt = runtime_of(app)
        result = text_me(app, player, worker_env)
        assert twilio.sent == []  # the recorder would have failed the send
        assert texts(worker_env) == [ALICE.phone]
        assert result.outcome == "enqueued"
        assert signal_events(rt) == []

    def test_on_without_an_account_stops_at_start_up(self) -> None:
        with pytest.raises(SettingsError, match="IVR_LOOKUP=on needs TWILIO_ACCOUNT_SID"):
            load_settings(lookup="on", twilio_auth_token=TOKEN)
