"""Malformed webhook requests get a polite prompt or a clear error, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from ivr.runtime import Runtime
from ivr.simulator import (
    Enqueue,
    Gather,
    Hangup,
    Say,
)
from tests.conftest import (
    ALICE,
    BASE_URL,
    BOB,
    TOKEN,
    Caller,
    call_params,
    signed_post,
)
from tests.support import (
    DID_NOT_MATCH,
    OTHER_ROUTE,
    VERIFIED,
    assert_apology,
    auth_events,
    call_keys,
    gather_action,
    redis_snapshot,
    said,
    sign,
    state_of,
    verbs,
)


def assert_polite(response: Any) -> list[Any]:
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/xml"
    parsed = verbs(response.data)
    assert parsed, response.data
    assert not any(isinstance(v, Enqueue) for v in parsed)
    assert any(isinstance(v, Say | Gather) for v in parsed)
    return parsed


ODD_UNICODE = "\u202e\u200b\ufeff\u0000\U0001f600e\u0301\u0645\u0631\u062d\u0628\u0627\ud7ff"


HEX32 = "0123456789abcdef" * 2


BAD_FIELDS = [
    ("digits_10k", {"Digits": "5" * 10_000}),
    ("digits_10k_prefixed", {"Digits": ALICE.pin + "0" * 9_994}),
    ("digits_letters", {"Digits": "12ab34"}),
    ("digits_unicode", {"Digits": "\u0665\u0668\u0663\u0669\u0662\u0660"}),
    ("digits_symbols", {"Digits": "*#*#"}),
    ("digits_empty", {"Digits": ""}),
    # 12,000 characters, 57 KB urlencoded: near the body bound (a larger body is a 413).
    ("speech_12k", {"SpeechResult": (ODD_UNICODE + "purple ") * 600, "Confidence": "0.9"}),
    ("speech_odd", {"SpeechResult": ODD_UNICODE, "Confidence": "0.95"}),
    ("confidence_nan", {"SpeechResult": ALICE.passcode, "Confidence": "nan"}),
    ("confidence_negative", {"SpeechResult": ALICE.passcode, "Confidence": "-1"}),
    ("confidence_text", {"SpeechResult": ALICE.passcode, "Confidence": "abc"}),
    ("confidence_inf", {"SpeechResult": ALICE.passcode, "Confidence": "inf"}),
    ("confidence_big", {"SpeechResult": ALICE.passcode, "Confidence": "1e308"}),
    ("nothing", {}),
]


class TestBadInput:
    @pytest.mark.parametrize(
        "call_sid",
        [
            None,
            "",
            "CA123",
            "CA" + "g" * 32,
            "XX" + HEX32,
            "ca" + HEX32,
            "CA" + HEX32 + "0",
            "CA" + HEX32 + "\n",
            " CA" + HEX32,
            "CA" + HEX32[:31] + "\u0660",
            "x" * 10_000,
        ],
    )
    def test_malformed_call_sid_gets_the_apology(
        self, client: FlaskClient, redis: Any, call_sid: str | None
    ) -> None:
        params = call_params()
        if call_sid is None:
            del params["CallSid"]
        else:
            params["CallSid"] = call_sid
        response = signed_post(client, "/voice", params)
        assert_polite(response)
        assert_apology(response.data)
        assert call_keys(redis) == []

    def test_malformed_call_sid_on_a_step_gets_the_apology(
        self, client: FlaskClient, redis: Any
    ) -> None:
        Caller(client).start()
        before = redis_snapshot(redis)
        params = call_params("CA123", Digits=ALICE.account)
        response = signed_post(client, "/voice/step/identify?seq=0", params)
        assert_apology(response.data)
        assert redis_snapshot(redis) == before

    @pytest.mark.parametrize(
        "from_number",
        ["anonymous", "+266696687", "sip:alice@example.com", "", "\u202e" * 200, "+1" * 5000],
    )
    def test_odd_caller_ids_start_a_normal_call(
        self, client: FlaskClient, customers: Any, redis: Any, from_number: str
    ) -> None:
        caller = Caller(client, from_number=from_number)
        assert gather_action(caller.start().data) == "/voice/step/identify?seq=0"
        assert len(state_of(redis).caller) <= 64
        # "Use my caller ID" from such a number claims nothing usable: no PIN can open the door.
        caller.answer(Digits="*")
        caller.answer(Digits="1")
        caller.answer(Digits=ALICE.pin)
        caller.answer(Digits="1")
        end = caller.answer(Digits=BOB.pin)
        assert OTHER_ROUTE in said(end.data)
        assert "<Enqueue" not in end.get_data(as_text=True)

    @pytest.mark.parametrize("step", ["identify", "choose_method", "pin", "passcode"])
    @pytest.mark.parametrize(("name", "given"), BAD_FIELDS, ids=[n for n, _ in BAD_FIELDS])
    def test_bad_gather_input_gets_a_polite_prompt(
        self,
        client: FlaskClient,
        customers: Any,
        runtime: Runtime,
        redis: Any,
        step: str,
        name: str,
        given: dict[str, str],
    ) -> None:
        caller = Caller(client).to(step)
        response = caller.post(caller.action, **given)
        parsed = assert_polite(response)
        assert not any(isinstance(v, Hangup) for v in parsed)
        state = state_of(redis)
        assert state.proofs == []
        assert not state.ended
        assert all(e["outcome"] != "success" for e in auth_events(runtime))

    @pytest.mark.parametrize("value", ["nan", "-1", "abc", "inf", "-0.5", "1.5", " ", "0x1p-1"])
    def test_unusable_confidence_counts_as_a_failed_attempt(
        self, client: FlaskClient, customers: Any, runtime: Runtime, redis: Any, value: str
    ) -> None:
        caller = Caller(client).to("passcode")
        response = caller.post(caller.action, SpeechResult=ALICE.passcode, Confidence=value)
        assert DID_NOT_MATCH in said(response.data)
        assert state_of(redis).failures == 1
        assert [e["outcome"] for e in auth_events(runtime)] == ["failure"]

    @pytest.mark.parametrize(
        "path",
        [
            "/voice/step/nonexistent?seq={seq}",
            "/voice/step/main_menu?seq={seq}",
            "/voice/step/balance_queue?seq={seq}",
            "/voice/step/other_route?seq={seq}",
            "/voice/step/PIN?seq={seq}",
            "/voice/step/" + "a" * 5000 + "?seq={seq}",
            "/voice/step/no%20such?seq={seq}",
        ],
    )
    def test_unknown_or_wrong_step_re_asks_the_question(
        self, client: FlaskClient, customers: Any, runtime: Runtime, redis: Any, path: str
    ) -> None:
        caller = Caller(client).to("pin")
        before = redis_snapshot(redis)
        response = caller.post(path.format(seq=state_of(redis).seq), Digits="1")
        assert_polite(response)
        assert gather_action(response.data) == caller.action
        assert redis_snapshot(redis) == before
        assert auth_events(runtime) == []

    @pytest.mark.parametrize("query", ["?seq=abc", "?seq=", "?seq=1.5", "", "?seq=%00", "?sq=2"])
    def test_non_integer_seq_gets_the_apology_and_loses_nothing(
        self, client: FlaskClient, customers: Any, runtime: Runtime, redis: Any, query: str
    ) -> None:
        caller = Caller(client).to("pin")
        before = redis_snapshot(redis)
        response = caller.post("/voice/step/pin" + query, Digits=ALICE.pin)
        assert_polite(response)
        assert_apology(response.data)
        assert redis_snapshot(redis) == before
        assert auth_events(runtime) == []
        # The real request, when it comes, still works.
        assert VERIFIED in said(caller.answer(Digits=ALICE.pin).data)

    def test_huge_seq_is_just_stale(self, client: FlaskClient, customers: Any, redis: Any) -> None:
        caller = Caller(client).to("pin")
        before = redis_snapshot(redis)
        response = caller.post("/voice/step/pin?seq=" + "9" * 400, Digits=ALICE.pin)
        assert_polite(response)
        assert redis_snapshot(redis) == before

    def test_step_for_unknown_call_gets_the_apology(self, client: FlaskClient, redis: Any) -> None:
        response = signed_post(client, "/voice/step/pin?seq=2", call_params(Digits=ALICE.pin))
        assert_apology(response.data)
        assert redis_snapshot(redis) == {}

    def test_non_form_body_is_refused(self, client: FlaskClient, redis: Any) -> None:
        url = BASE_URL + "/voice"
        response = client.post(
            "/voice",
            json=call_params(),
            headers=sign(TOKEN, url, {}),
            base_url=BASE_URL,
        )
        # Signed, but the parameters are not where Twilio puts them (nor what it signs).
        assert response.status_code == 415
        assert call_keys(redis) == []

    def test_get_is_not_allowed(self, client: FlaskClient) -> None:
        response = client.get("/voice", base_url=BASE_URL)
        assert response.status_code in (403, 405)
