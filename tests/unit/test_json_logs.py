"""`IVR_LOG_FORMAT=json`: every line one JSON object, the call SID when known, no personal data."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rq import Queue

from ivr import logging_setup
from ivr.processes import QUEUE
from ivr.simulator import CallPlayer, Keys
from tests.conftest import ALICE, run_jobs, up_to_card_check
from tests.support import Handset, StrictTurns, assert_card_services

SID = "CA" + "5d" * 16


@pytest.fixture
def json_logs() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    quiet = {name: logging.getLogger(name).level for name in logging_setup.QUIET}
    logging_setup.configure("json")
    logging_setup.configure("json")  # once per process, however often the app is built
    yield
    for handler in [h for h in root.handlers if isinstance(h, logging_setup.JsonHandler)]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)


def lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text`, each parsed: a line that is not one JSON object fails the test."""
    parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(line, dict) for line in parsed)
    return parsed


def ours(parsed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines of the JSON handler (the audit trail's own lines have `event` instead)."""
    return [line for line in parsed if "event" not in line]


def test_a_whole_call_logs_json_lines_with_its_sid_and_nothing_personal(
    json_logs: None,
    caller: Callable[..., CallPlayer],
    handset: Handset,
    capsys: pytest.CaptureFixture[str],
) -> None:
    turns = StrictTurns(
        *up_to_card_check(), ("card_check", Keys("1")), ("sms_code", handset.key_in_latest)
    )
    call = caller()
    result = call.play(turns)
    assert_card_services(result)
    text = capsys.readouterr().err

    parsed = lines(text)
    mine = ours(parsed)
    assert len(mine) >= 6, text
    for line in mine:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert line["time"].endswith("+00:00")
    voice = [line for line in mine if line["logger"] == "ivr.web.voice"]
    assert voice and all(line.get("call_sid") == call.call_sid for line in voice)
    [code] = handset.used
    for secret in (ALICE.phone, ALICE.phone.removeprefix("+"), ALICE.pin, ALICE.account, code):
        assert secret not in text, secret


def test_a_job_s_lines_carry_the_call_it_is_for(
    json_logs: None, redis: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    Queue(QUEUE, connection=redis).enqueue("logging.warning", SID)
    assert run_jobs(redis)
    [line] = [line for line in lines(capsys.readouterr().err) if line["logger"] == "root"]
    assert (line["message"], line["call_sid"]) == (SID, SID)


def test_a_request_s_lines_carry_no_sid_before_its_signature_is_checked(
    json_logs: None, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    client.post("/voice", data={"CallSid": SID}, headers={"X-Twilio-Signature": "forged"})
    parsed = ours(lines(capsys.readouterr().err))
    assert any("did not match" in line["message"] for line in parsed), parsed
    assert all("call_sid" not in line for line in parsed)


def test_an_exception_is_its_type_and_frames_never_its_message(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        raise ValueError(f"bad PIN {ALICE.pin} from {ALICE.phone}")
    except ValueError:
        logging.getLogger("ivr.test").exception("lookup failed")
    [line] = lines(capsys.readouterr().err)
    assert (line["message"], line["exception"]) == ("lookup failed", "ValueError")
    assert "test_json_logs.py" in line["traceback"]
    assert ALICE.pin not in json.dumps(line)


def test_the_twilio_library_s_request_log_is_held_back(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # What twilio.http logs for each API call at INFO: an SMS's parameters, code included.
    logging.getLogger("twilio.http_client").info(
        "POST Request: https://api.twilio.com/Messages.json?To=%2B14155550100&Body=123456"
    )
    logging.getLogger("twilio.http_client").warning("a warning still shows")
    [line] = lines(capsys.readouterr().err)
    assert line["message"] == "a warning still shows"


def test_text_is_the_default_and_changes_nothing() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    logging_setup.configure("text")
    assert root.handlers == before
