"""A call back continues on the flow version the call that asked for it started on (issue 8,
part 6: a call keeps its version until it ends), even when a new version is published between
the call back being placed and the customer answering it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from ivr.outbox import Outbox
from tests.conftest import ALICE, Caller, enrol, make_app, run_jobs
from tests.support import edit, said
from tests.unit.test_flow_versions import DEFAULT, publish

HELLO = "Hello, this is Example Bank returning your call about your card."
ASKER, CALL_BACK = "CA" + "a" * 32, "CA" + "b" * 32


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    path = tmp_path / "flows" / "default.yaml"
    path.parent.mkdir()
    path.write_text(DEFAULT)
    return path


def version(tag: str) -> str:
    """The default flow, its call back greeting saying `tag` first."""
    return edit(DEFAULT, HELLO, f"{tag}. {HELLO}")


def test_a_call_back_answered_after_a_publish_stays_on_its_call_s_version(
    redis: Any,
    flow_file: Path,
    worker_env: Path,
) -> None:
    outbox_path = worker_env  # the outbox the worker delivers the call back to
    app: Flask = make_app(redis, outbox=outbox_path, flows_dir=flow_file.parent)
    with app.app_context():
        enrol(app.extensions["ivr"], ALICE)
    publish(redis, flow_file, version("Version A"))
    asking = Caller(app.test_client(), call_sid=ASKER)
    asking.start()
    for digits in (ALICE.account, "1", ALICE.pin, "2", "3"):  # PIN, card, call me back
        asking.answer(Digits=digits)
    run_jobs(redis)  # the worker places the call back
    [ring] = [m for m in Outbox(outbox_path).messages() if m.channel == "call"]
    publish(redis, flow_file, version("Version B"))
    answered = Caller(app.test_client(), call_sid=ring.call_sid or CALL_BACK)
    answered.from_number = ALICE.phone
    heard = said(answered.post("/voice/callback", Direction="outbound-api").data)
    assert heard.startswith("Version A."), heard
