"""The browser phone's server side, on fakeredis: the page exists only in dev mode; a call goes
on one answer at a time from the state the page carries, which the page cannot forge; the saved
call is a scenario file `ivr flows test` replays and passes; bad input is a 4xx, never a 500.

The browser itself is tested in tests/integration/test_dev_phone_browser.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer

from ivr.dev.customers import DEMO_CUSTOMERS, customer_record
from ivr.flows.scenario_runner import run_file
from ivr.outbox import Outbox, OutboxMessage
from ivr.runtime import runtime as current_runtime
from ivr.simulator import Keys, WsgiTransport
from ivr.simulator import phone_call as phone
from ivr.simulator.phone import CODE_IN_TEXT
from ivr.simulator.phone_call import Line, PhoneCall, PhoneError
from ivr.web.dev_phone import SALT
from tests.conftest import BASE_URL, TOKEN, make_app, run_jobs

ADA = DEMO_CUSTOMERS[0]
PIN_CALL = [f"{ADA.account}#", "1", f"{ADA.pin}#", "1"]


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    """A copy of the shipped flows: saving writes into its tests/."""
    copy = tmp_path / "flows"
    shutil.copytree(Path(__file__).resolve().parents[2] / "flows", copy)
    return copy


@pytest.fixture
def phone_app(redis: Any, flows_dir: Path, outbox_path: Path) -> Flask:
    app = make_app(redis, dev_phone=True, flows_dir=flows_dir, outbox=outbox_path)
    with app.app_context():
        rt = current_runtime()
        for demo in DEMO_CUSTOMERS:
            rt.customers.add(customer_record(demo, rt.hasher))
    return app


@pytest.fixture
def web(phone_app: Flask) -> FlaskClient:
    return phone_app.test_client()


def _dial(web: FlaskClient, **body: Any) -> dict[str, Any]:
    response = web.post("/dev/phone/dial", json={"from": ADA.phone, **body})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _press(web: FlaskClient, view: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        response = web.post("/dev/phone/answer", json={"call": view["call"], "keys": key})
        assert response.status_code == 200, response.get_json()
        view = response.get_json()
    return view


def _heard(view: dict[str, Any]) -> list[str]:
    return [line["text"] for line in view["lines"] if line["kind"] == "say"]


# -- dev mode only ---------------------------------------------------------------------------


def test_without_dev_mode_there_is_no_phone(client: FlaskClient) -> None:
    assert client.get("/dev/phone").status_code == 404
    assert client.post("/dev/phone/dial", json={}).status_code == 404
    assert client.get("/dev/phone/static/dev_phone.js").status_code == 404


def test_the_page_is_served_in_dev_mode_with_the_agent_pages_policy(web: FlaskClient) -> None:
    response = web.get("/dev/phone")
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'self'" in policy
    assert response.headers["Cache-Control"] == "no-store"
    assert b"<script>" not in response.data  # no inline code: the CSP would refuse it
    with web.get("/dev/phone/static/dev_phone.js") as script:
        assert script.status_code == 200


# -- a call, one answer at a time ----------------------------------------------------------------


def test_a_pin_call_reaches_the_queue_one_answer_at_a_time(web: FlaskClient) -> None:
    view = _dial(web, stir_verstat="TN-Validation-Passed-A")
    assert "IVR: Welcome to Example Bank." in [line["text"] for line in view["lines"]]
    assert view["waiting"]["dtmf"] and view["waiting"]["finish_on_key"] == "#"
    assert view["twiml"][0]["request"] == "POST /voice -> 200"
    assert "<Gather" in view["twiml"][0]["body"]
    view = _press(web, view, *PIN_CALL[:3])
    assert any("you are verified" in text for text in _heard(view))
    view = _press(web, view, PIN_CALL[3])
    assert (view["outcome"], view["queue"], view["waiting"]) == ("enqueued", "balances", None)
    assert view["on_hold"] is True
    hung = web.post("/dev/phone/hangup", json={"call": view["call"]}).get_json()
    assert hung["on_hold"] is False


def test_silence_falls_through_the_gather_as_on_twilio(web: FlaskClient) -> None:
    view = _dial(web)
    for _ in range(3):
        response = web.post("/dev/phone/answer", json={"call": view["call"], "silence": True})
        view = response.get_json()
    assert any("We did not receive a response" in text for text in _heard(view))
    assert view["outcome"] == "hung_up"


def test_the_page_cannot_alter_the_call_it_carries(web: FlaskClient) -> None:
    view = _dial(web)
    genuine = URLSafeTimedSerializer(TOKEN, salt=SALT)
    _, data = genuine.loads_unsafe(view["call"])
    data["waiting"]["document_url"] = "http://localhost/voice/step/pin?seq=1"  # skip a step
    for forged in (
        URLSafeTimedSerializer("a key the page guessed", salt=SALT).dumps(data),
        view["call"][:-2] + ("AA" if not view["call"].endswith("AA") else "BB"),
    ):
        response = web.post("/dev/phone/answer", json={"call": forged, "keys": "1"})
        assert response.status_code == 400
        assert "not a call this server made" in response.get_json()["error"]
    response = web.post("/dev/phone/answer", json={"call": genuine.dumps(data), "keys": "1"})
    assert response.status_code == 200  # the same change, signed with the key, would be played


# -- saving a call as a scenario -----------------------------------------------------------------


def test_a_saved_pin_call_is_a_scenario_that_passes(web: FlaskClient, flows_dir: Path) -> None:
    view = _press(web, _dial(web, stir_verstat="TN-Validation-Passed-B"), *PIN_CALL)
    response = web.post("/dev/phone/save", json={"call": view["call"], "name": "PIN to balances"})
    assert response.status_code == 200, response.get_json()
    path = Path(response.get_json()["file"])
    assert path.parent == flows_dir / "tests" and path.name == "phone-pin-to-balances.yaml"
    [scenario] = yaml.safe_load(path.read_text())["scenarios"]
    assert scenario["from"] == ADA.phone and scenario["stir_verstat"] == "TN-Validation-Passed-B"
    assert {"press": f"{ADA.pin}#"} in scenario["steps"]
    assert scenario["steps"][-1] == {"queue": "balances"}
    results, *_ = run_file(path)
    assert [(r.name, r.failure) for r in results] == [("PIN to balances", None)]
    # Saving again never overwrites.
    again = web.post("/dev/phone/save", json={"call": view["call"], "name": "PIN to balances"})
    assert Path(again.get_json()["file"]).name == "phone-pin-to-balances-2.yaml"


def test_a_saved_failed_call_expects_no_queue(web: FlaskClient) -> None:
    view = _press(web, _dial(web), f"{ADA.account}#", "1", "000000#", "1", "111111#")
    assert view["outcome"] == "hung_up"
    path = Path(web.post("/dev/phone/save", json={"call": view["call"]}).get_json()["file"])
    steps = yaml.safe_load(path.read_text())["scenarios"][0]["steps"]
    assert steps[-1] == {"no_queue": True}
    assert {"hear": "We could not verify your identity on this call."} in steps
    results, *_ = run_file(path)
    assert [r.failure for r in results] == [None]


def test_a_call_in_progress_or_hung_up_mid_question_is_not_saved(web: FlaskClient) -> None:
    view = _dial(web)
    response = web.post("/dev/phone/save", json={"call": view["call"]})
    assert response.status_code == 409
    assert "still going on" in response.get_json()["error"]
    hung = web.post("/dev/phone/hangup", json={"call": view["call"]}).get_json()
    response = web.post("/dev/phone/save", json={"call": hung["call"]})
    assert response.status_code == 409
    assert "a scenario cannot hang up" in response.get_json()["error"]


# -- codes and call backs (the worker's jobs run in process) -------------------------------------


class _WorkerDelivers(WsgiTransport):
    """The app, with the worker's queued jobs run before each webhook: a caller on hold gives
    the worker time to deliver, as `ivr dev`'s real worker does."""

    def __init__(self, app: Flask, redis: Any) -> None:
        super().__init__(app)
        self.redis = redis

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Any:
        run_jobs(self.redis)
        return super().post(url, params, headers)


@pytest.fixture
def line(phone_app: Flask, redis: Any, outbox_path: Path, worker_env: Path) -> Line:
    return Line(
        _WorkerDelivers(phone_app, redis), BASE_URL, TOKEN, Outbox(outbox_path), pause_scale=0
    )


def _play(line: Line, *keys: str) -> PhoneCall:
    call, _ = phone.dial(line, "+14155550123", None, "+15005550001")
    for key in keys:
        phone.answer(line, call, Keys(key))
    return call


def _save_and_replay(call: PhoneCall, flows_dir: Path) -> dict[str, Any]:
    from ivr.flows.recorder import save_scenario, scenario_document

    document = scenario_document("default", "recorded", call.caller, None, call.scenario())
    path = save_scenario(flows_dir / "tests", document)
    results, *_ = run_file(path)
    assert [r.failure for r in results] == [None]
    return yaml.safe_load(path.read_text())["scenarios"][0]


def test_a_texted_code_keyed_in_is_recorded_as_code_sms(line: Line, flows_dir: Path) -> None:
    call = _play(line, f"{ADA.account}#", "1", f"{ADA.pin}#", "2", "1")
    [text] = [m for m in line.outbox.messages() if m.channel == "sms"]
    code = CODE_IN_TEXT.search(text.body)
    assert code is not None
    phone.answer(line, call, Keys(code.group(1) + "#"))
    assert (call.outcome, call.queue) == ("enqueued", "card-services")
    scenario = _save_and_replay(call, flows_dir)
    assert {"code": "sms"} in scenario["steps"]
    assert code.group(1) not in yaml.safe_dump(scenario)  # the replay's code is another


def test_the_call_back_is_answered_and_recorded(line: Line, flows_dir: Path) -> None:
    call = _play(line, f"{ADA.account}#", "1", f"{ADA.pin}#", "2", "3")
    assert call.outcome == "hung_up"
    run_jobs(line.transport.redis)  # type: ignore[attr-defined]
    step = phone.answer_callback(line, call)
    assert any("returning your call" in text for text in step.result.heard)
    with pytest.raises(PhoneError, match="no call back"):
        phone.answer_callback(line, PhoneCall.from_json(call.to_json() | {"outcome": "hung_up"}))
    phone.answer(line, call, Keys("1"))
    assert (call.outcome, call.queue) == ("enqueued", "card-services")
    scenario = _save_and_replay(call, flows_dir)
    assert {"answer_callback": True} in scenario["steps"]


# -- bad input: a clear 4xx, never a 500 -----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/dev/phone/dial", {"from": "12345"}, 400, "`from`"),
        ("/dev/phone/dial", {"from": ["+15005550006"]}, 400, "`from`"),
        ("/dev/phone/dial", {"stir_verstat": "<script>"}, 400, "`stir_verstat`"),
        ("/dev/phone/answer", {"keys": "1"}, 400, "`call`"),
        ("/dev/phone/answer", {"call": "nonsense", "keys": "1"}, 400, "not a call this server"),
        ("/dev/phone/answer", {"call": 7, "keys": "1"}, 400, "`call`"),
        ("/dev/phone/save", {"call": None}, 400, "`call`"),
        ("/dev/phone/hangup", [], 400, "not a JSON object"),
    ],
)
def test_bad_requests_get_a_clear_json_error(
    web: FlaskClient, path: str, body: Any, status: int, says: str
) -> None:
    response = web.post(path, json=body)
    assert response.status_code == status
    assert says in response.get_json()["error"]


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ({"keys": "12a"}, "`keys`"),
        ({"keys": ""}, "`keys`"),
        ({"keys": "1" * 65}, "`keys`"),
        ({"say": "hello", "confidence": 2}, "`confidence`"),
        ({"say": "hello", "confidence": True}, "`confidence`"),
        ({"say": ""}, "`say`"),
        ({"keys": "1", "silence": True}, "one of"),
        ({}, "one of"),
    ],
)
def test_bad_answers_get_a_clear_json_error(
    web: FlaskClient, answer: dict[str, Any], says: str
) -> None:
    view = _dial(web)
    response = web.post("/dev/phone/answer", json={"call": view["call"], **answer})
    assert response.status_code == 400
    assert says in response.get_json()["error"]


def test_not_json_oversized_and_out_of_turn(web: FlaskClient) -> None:
    response = web.post("/dev/phone/dial", data="from=%2B15005550006")
    assert response.status_code == 415 and "JSON" in response.get_json()["error"]
    response = web.post("/dev/phone/dial", data="{" * 70000, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["error"]
    ended = _press(web, _dial(web), *PIN_CALL)
    web.post("/dev/phone/hangup", json={"call": ended["call"]})
    response = web.post("/dev/phone/answer", json={"call": ended["call"], "keys": "1"})
    assert response.status_code == 409 and "has ended" in response.get_json()["error"]
    response = web.post("/dev/phone/callback", json={"call": ended["call"]})
    assert response.status_code == 409 and "no call back" in response.get_json()["error"]
    assert web.get("/dev/phone/outbox?after=-1").status_code == 400


def test_the_outbox_shows_what_was_sent(web: FlaskClient, outbox_path: Path) -> None:
    box = Outbox(outbox_path)
    box.append(OutboxMessage("sms", ADA.phone, "Example Bank: your code is 123456."))
    data = web.get("/dev/phone/outbox?after=0").get_json()
    assert data["count"] == 1
    assert data["messages"][0] | {} == {
        "index": 0,
        "channel": "sms",
        "to": ADA.phone,
        "subject": None,
        "body": "Example Bank: your code is 123456.",
    }
    assert web.get("/dev/phone/outbox?after=1").get_json()["messages"] == []


def test_the_dev_banner_names_the_phone() -> None:
    from ivr.dev.banner import banner

    said: list[str] = []
    banner(said.append, "http://127.0.0.1:8000", [], {})
    assert "Play a call in the browser: http://127.0.0.1:8000/dev/phone" in said
