"""One gate for every send (SECURITY 14): a number in its abuse cool-down gets nothing sent on
its behalf, and that refusal is audited like a send cap's, with `abuse` as the reason."""

from __future__ import annotations

from typing import Any

from ivr.flows.engine import CallState
from ivr.runtime import Runtime, make_abuse_guard
from tests.conftest import ALICE, DemoCustomer
from tests.support import audit_events, deliveries

SPRAYER = "+14155550123"


def refuse(runtime: Runtime, caller: str) -> None:
    """Fail from `caller` until the abuse limits refuse it."""
    guard = make_abuse_guard(runtime.settings, runtime.redis, runtime.audit)
    for n in range(100):
        state = CallState(call_sid=f"CA{n:032x}", caller=caller, step="pin", account=f"{n:08d}")
        admission = guard.admit(state)
        if admission is None:
            return
        guard.settle(admission, state, True, None)
    raise AssertionError("never refused")


def asking(caller: str = SPRAYER) -> CallState:
    return CallState(
        call_sid="CA" + "5d" * 16, caller=caller, step="sms_code", account=ALICE.account
    )


def test_a_refused_number_is_audited_as_capped_by_abuse(
    runtime: Runtime, customers: dict[str, DemoCustomer], redis: Any
) -> None:
    refuse(runtime, SPRAYER)
    state = asking()
    assert runtime.engine.ports.request_code(state, "sms_otp", 12) == "unavailable"
    assert runtime.engine.ports.request_callback(state, "call_back") == "unavailable"
    assert deliveries(redis, state.call_sid) == [
        ("sms_otp", "send_capped"),
        ("callback", "send_capped"),
    ]
    capped = [e for e in audit_events(redis, state.call_sid) if e["outcome"] == "send_capped"]
    assert [e["detail"] for e in capped] == ["abuse", "abuse"]
    assert redis.keys("ivr:sends:*") == []  # nothing counted against any cap


def test_another_number_is_not_refused(
    runtime: Runtime, customers: dict[str, DemoCustomer], redis: Any
) -> None:
    refuse(runtime, SPRAYER)
    assert runtime.possession.request_code(asking("+14155550999"), "sms_otp", 12) == "queued"
