"""The status callback and the fallback webhook."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from ivr.simulator import (
    scripted,
)
from ivr.store import keys
from tests.conftest import (
    ALICE,
    BASE_URL,
    PIN_CALL,
    Caller,
    PlayerFactory,
    call_params,
    signed_post,
)
from tests.support import (
    SID,
    VERIFIED,
    assert_apology,
    redis_snapshot,
    said,
)


class TestStatusAndFallback:
    @pytest.mark.parametrize("status", ["completed", "busy", "failed", "no-answer", "canceled"])
    def test_status_callback_is_204_and_only_marks_the_call_over(
        self, client: FlaskClient, customers: Any, redis: Any, status: str
    ) -> None:
        caller = Caller(client).to("pin")
        before = redis_snapshot(redis)
        response = caller.post("/voice/status", CallStatus=status, CallDuration="12")
        assert response.status_code == 204
        assert response.data == b""
        after = redis_snapshot(redis)
        assert after[keys.call(SID).encode()].pop(b"over") == b"1"  # issue 7: call over
        assert after == before
        # The call carries on exactly where it was.
        assert VERIFIED in said(caller.answer(Digits=ALICE.pin).data)

    def test_status_for_unknown_call_creates_nothing(self, client: FlaskClient, redis: Any) -> None:
        response = signed_post(client, "/voice/status", call_params(CallStatus="completed"))
        assert response.status_code == 204
        assert response.data == b""
        assert redis_snapshot(redis) == {}

    def test_status_with_bad_input_is_still_204(self, client: FlaskClient, redis: Any) -> None:
        response = signed_post(
            client, "/voice/status", {"CallSid": "x" * 10_000, "CallStatus": "\u202e" * 5000}
        )
        assert response.status_code == 204
        assert redis_snapshot(redis) == {}

    def test_simulated_call_ends_with_a_status_callback(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        result = player().play(scripted(*PIN_CALL))
        assert result.status_callback is not None
        assert result.status_callback.status == 204
        assert result.status_callback.body == ""

    def test_fallback_apologises_and_hangs_up(self, client: FlaskClient, redis: Any) -> None:
        params = call_params(ErrorCode="11200", ErrorUrl=BASE_URL + "/voice")
        response = signed_post(client, "/voice/fallback", params)
        assert response.status_code == 200
        assert response.mimetype == "application/xml"
        assert_apology(response.data)
        assert redis_snapshot(redis) == {}

    def test_fallback_mid_call_never_opens_the_door(
        self, client: FlaskClient, customers: Any, redis: Any
    ) -> None:
        caller = Caller(client).to("main_menu")
        before = redis_snapshot(redis)
        response = caller.post("/voice/fallback", Digits="1")
        assert_apology(response.data)
        assert redis_snapshot(redis) == before
