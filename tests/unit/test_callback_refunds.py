"""A call back that is never placed hands its send back, as a code does (SECURITY 30).

`place_callback` used to return without a refund when its send was abandoned, asked too long
ago or superseded by a newer one, so a call back nobody placed used up the caps the account,
its number and its country prefix share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import workers.jobs as jobs
from ivr.auth.possession import CALLBACK_WITHIN
from ivr.flows.engine import CallState
from ivr.outbox import Outbox
from ivr.runtime import Runtime
from ivr.store import keys
from tests.conftest import ALICE, DemoCustomer, run_jobs

SID = "CA" + "c4" * 16


def asking(seq: int = 0) -> CallState:
    return CallState(
        call_sid=SID, caller="+15005550006", step="call_back", seq=seq, account=ALICE.account
    )


def counted(redis: Any) -> dict[str, int]:
    return {
        scope: int(redis.get(keys.sends(scope, value)) or 0)
        for scope, value in (
            ("call", SID),
            ("account", ALICE.account),
            ("destination", ALICE.phone),
            ("prefix", "1"),
        )
    }


def abandoned(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> int:
    runtime.possession.request_callback(asking(), "call_back")
    runtime.possession.abandon_delivery(asking(), "callback")
    return 1


def stale(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> int:
    runtime.possession.request_callback(asking(), "call_back")
    late = time.time() + CALLBACK_WITHIN + 1
    monkeypatch.setattr(jobs, "time", SimpleNamespace(time=lambda: late))
    return 1


def superseded(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> int:
    runtime.possession.request_callback(asking(seq=0), "call_back")
    runtime.possession.request_callback(asking(seq=1), "call_back")  # before the worker ran
    return 2


@pytest.mark.parametrize("never_placed", [abandoned, stale, superseded])
def test_a_call_back_never_placed_is_handed_back(
    never_placed: Callable[[Runtime, pytest.MonkeyPatch], int],
    redis: Any,
    runtime: Runtime,
    customers: dict[str, DemoCustomer],
    worker_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = never_placed(runtime, monkeypatch)
    run_jobs(redis)
    placed = len(Outbox(worker_env).messages())
    assert placed == asked - 1  # only a superseding call back is placed
    assert counted(redis) == {
        "call": asked,
        "account": placed,
        "destination": placed,
        "prefix": placed,
    }
