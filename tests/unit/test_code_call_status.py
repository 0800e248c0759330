"""Status callbacks during a code step up only mark the call over."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, Keys
from tests.conftest import (
    ALICE,
    BASE_URL,
    TOKEN,
    up_to_card_check,
)
from tests.support import (
    OUR_NUMBER,
    Handset,
    StrictTurns,
    assert_card_services,
    redis_snapshot,
    sign,
)


class TestStatusCallbacks:
    def test_status_callbacks_only_mark_the_call_over(
        self,
        caller: Callable[..., CallPlayer],
        handset: Handset,
        runtime: Runtime,
        app: Flask,
    ) -> None:
        client = app.test_client()
        seen: list[tuple[int, bool]] = []

        def status(call_sid: str, call_status: str) -> None:
            params = {
                "CallSid": call_sid,
                "AccountSid": "AC" + "5e" * 16,
                "From": ALICE.phone,
                "To": OUR_NUMBER,
                "CallStatus": call_status,
                "Direction": "inbound",
                "ApiVersion": "2010-04-01",
            }
            url = BASE_URL + "/voice/status"
            before = but_over(call_sid)
            response = client.post(
                "/voice/status",
                data=params,
                headers=sign(TOKEN, url, params),
                base_url=BASE_URL,
            )
            seen.append((response.status_code, but_over(call_sid) == before))

        def but_over(call_sid: str) -> dict[bytes, object]:
            """All of Redis, less the call's `over` mark (issue 7: agents may not read it)."""
            snapshot = redis_snapshot(runtime.redis)
            call = snapshot.get(f"ivr:call:{call_sid}".encode())
            if isinstance(call, dict):
                call.pop(b"over", None)
            return snapshot

        player = caller(send_status=False, on_pause=lambda: status(player.call_sid, "completed"))
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_latest),
        )
        result = player.play(turns)
        # a "completed" status while the caller holds does not end or unlock anything
        assert_card_services(result)
        status(player.call_sid, "completed")
        status(player.call_sid, "failed")
        # Only the marker the agent API reads (`over`) is added: nothing of the call changes.
        assert seen == [(204, True)] * 3
        assert runtime.redis.hget(f"ivr:call:{player.call_sid}", "over") == b"1"
