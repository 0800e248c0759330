"""What travels to the queue: a TaskRouter <Task> with the call's opaque reference, the intent,
the assurance, the methods and when, and the risk signals. Nothing personal, for any queue of
the default flow (issue 7, item 2; SECURITY 22-24).

Every call is played with the simulator against the real app (fakeredis, the worker's jobs run
with rq's SimpleWorker while the caller holds), exactly as Twilio would; what reached the queue
is the parsed <Enqueue> of the last answer.
"""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from twilio.twiml.voice_response import VoiceResponse

from ivr.assurance import Assurance, Requirement
from ivr.flows.engine import CallerInput, CallState, task_attributes
from ivr.flows.schema import EnqueueStep
from ivr.outbox import Outbox
from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, CallResult, TwimlError, parse_twiml
from ivr.simulator.phone import Phone
from ivr.store import keys
from ivr.store.sessions import SessionStore
from tests.conftest import ALICE, API_TOKEN, PlayerFactory, make_app, run_jobs
from tests.support import (
    QUEUE_PATHS,
    TASK_KEYS,
    assert_no_personal_data,
    personal_values,
    pin_caller,
    queue_caller,
)

WORKFLOW = "WW" + "4d" * 16
ISO_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
REF = re.compile(r"[A-Za-z0-9_-]{16}")
OTHER_PHONE = "+14155550123"  # Alice calls from a phone that is not on file
EXPECTED = {
    "balances": ("balances", ["pin"]),
    "general": ("general", ["pin"]),
    "card-services by sms": ("card-services", ["pin", "sms_otp"]),
    "card-services by callback": ("card-services", ["pin", "callback"]),
    "card-services by service code": ("card-services", ["pin", "service_code"]),
}
ALICE_DATA = personal_values(
    ALICE.account, ALICE.phone, ALICE.email, ALICE.pin, ALICE.name, ALICE.address
)


@pytest.fixture
def app(redis: Any, outbox_path: Path) -> Flask:
    """The app with a TaskRouter workflow: every enqueue carries a <Task>."""
    flask_app = make_app(redis, outbox=outbox_path, taskrouter_workflow_sid=WORKFLOW)
    flask_app.config["TESTING"] = True
    return flask_app


def play_path(
    path: str, player: PlayerFactory, runtime: Runtime, outbox: Path, client: Any
) -> tuple[CallResult, CallPlayer]:
    """Alice, from a phone not on file, takes `path` to its queue; for the callback path the
    result is the call back's, answered on the phone on file."""
    phone = Phone(Outbox(outbox))
    service_code = None
    if path.endswith("service code"):
        response = client.post(
            "/api/service-codes",
            json={"account": ALICE.account},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        service_code = str(response.get_json()["code"])

    def observer(kind: str, line: str) -> None:
        if kind == "pause":
            run_jobs(runtime.redis)

    caller = queue_caller(ALICE.account, ALICE.pin, path, phone.latest_code, service_code)
    call = player(
        OTHER_PHONE,
        pause_scale=0,
        observer=observer,
        extra_params={"StirVerstat": "TN-Validation-Passed-B"},
    )
    result = call.play(caller)
    if not path.endswith("callback"):
        return result, call
    assert result.outcome == "hung_up", result.transcript()
    run_jobs(runtime.redis)
    ringing = phone.wait_for_call(timeout=0)
    assert ringing is not None and ringing.call_sid is not None
    back = player(
        "+15005550001",
        to_number=ALICE.phone,
        call_sid=ringing.call_sid,
        voice_path="/voice/callback",
        extra_params={"Direction": "outbound-api"},
        pause_scale=0,
    )
    return back.play(caller), back


class TestEveryQueueOfTheDefaultFlow:
    def test_the_default_flow_has_these_queues_and_no_others(self, runtime: Runtime) -> None:
        queues = {s.queue for s in runtime.flow.steps.values() if isinstance(s, EnqueueStep)}
        assert queues == {queue for queue, _ in EXPECTED.values()}
        assert set(QUEUE_PATHS) == set(EXPECTED)

    @pytest.mark.parametrize("path", list(EXPECTED))
    def test_the_task_carries_only_the_allowed_keys_and_nothing_personal(
        self,
        path: str,
        player: PlayerFactory,
        runtime: Runtime,
        customers: Any,
        worker_env: Path,
        client: Any,
    ) -> None:
        started = time.time()
        result, call = play_path(path, player, runtime, worker_env, client)
        queue, methods = EXPECTED[path]

        assert result.outcome == "enqueued", result.transcript(requests=True)
        enqueue = result.enqueue
        assert enqueue is not None
        assert enqueue.workflow_sid == WORKFLOW
        attributes = enqueue.attributes
        assert attributes is not None
        assert set(attributes) == TASK_KEYS
        assert attributes["intent"] == queue
        assert attributes["assurance"] == ("one_factor" if len(methods) == 1 else "two_factor")
        listed = attributes["methods"]
        assert isinstance(listed, list)
        assert [m["method"] for m in listed] == methods
        for method in listed:
            assert set(method) == {"method", "at"}
            assert ISO_UTC.fullmatch(method["at"]), method
            at = calendar.timegm(time.strptime(method["at"], "%Y-%m-%dT%H:%M:%SZ"))
            assert started - 1 <= at <= time.time() + 1
        signals = attributes["signals"]
        assert isinstance(signals, dict)
        # the call back is our own outbound call: no PASSporT, so no attestation
        assert signals == {"attestation": "absent" if path.endswith("callback") else "B"}
        assert_no_personal_data(result, ALICE_DATA)

        # the reference is opaque, and it names this very call
        ref = attributes["call_ref"]
        assert isinstance(ref, str) and REF.fullmatch(ref)
        assert not any(value in ref for value in ALICE_DATA)
        stored = runtime.sessions.load(call.call_sid)
        assert stored is not None
        assert stored.state.ref == ref
        assert stored.state.queue == queue
        assert sorted(stored.state.proven_at) == sorted(methods)

    def test_without_a_workflow_the_plain_queue_and_nothing_attached(
        self, redis: Any, outbox_path: Path, customers: Any, player: PlayerFactory
    ) -> None:
        plain = make_app(redis, outbox=outbox_path)
        result = player(OTHER_PHONE, app=plain, pause_scale=0).play(
            queue_caller(ALICE.account, ALICE.pin, "balances")
        )
        assert result.outcome == "enqueued", result.transcript()
        assert result.enqueue is not None
        assert result.enqueue.queue == "balances"
        assert result.enqueue.workflow_sid is None
        assert result.enqueue.task is None
        assert "<Task" not in result.responses[-1]


class TestAttributes:
    def test_below_one_factor_not_even_a_claim_travels(self) -> None:
        claimed = CallState(call_sid="CA1", caller="+1", step="x", account=ALICE.account, ref="r")
        attributes = task_attributes(claimed, "general", Requirement(Assurance.one_factor))
        assert attributes["assurance"] == "none"  # never "identified"
        assert attributes["methods"] == []

    def test_a_new_claim_drops_the_times_of_the_old_one(
        self, player: PlayerFactory, runtime: Runtime, customers: Any
    ) -> None:
        """Alice proves her PIN, then claims Bob's account: her proof's time goes with it."""
        call = player(OTHER_PHONE, pause_scale=0)
        result = call.play(pin_caller(ALICE.account, ALICE.pin))
        assert result.outcome == "enqueued"
        stored = runtime.sessions.load(call.call_sid)
        assert stored is not None
        assert list(stored.state.proven_at) == ["pin"]
        state = stored.state
        state.ended, state.step = False, "identify"
        runtime.engine.answer(state, CallerInput(digits=ALICE.account[::-1], at=time.time()))
        assert state.proven_at == {}
        assert state.proofs == []


class TestCallReference:
    def test_by_ref_finds_the_live_call_and_nothing_else(
        self, player: PlayerFactory, runtime: Runtime, customers: Any
    ) -> None:
        call = player(OTHER_PHONE, pause_scale=0, send_status=False)
        call.play(queue_caller(ALICE.account, ALICE.pin, "balances"))
        stored = runtime.sessions.load(call.call_sid)
        assert stored is not None
        ref = stored.state.ref
        assert runtime.redis.get(keys.callref(ref)) == call.call_sid.encode()
        assert 0 < runtime.redis.ttl(keys.callref(ref)) <= runtime.settings.session_ttl

        found = runtime.sessions.by_ref(ref)
        assert found is not None and found.call_sid == call.call_sid
        assert found.queue == "balances"
        for wrong in ("", "x" * 16, ref[:-1], ref + "a", "../" + ref, "ivr:call:*"):
            assert runtime.sessions.by_ref(wrong) is None

    def test_a_call_that_ended_is_found_no_more(
        self, player: PlayerFactory, runtime: Runtime, customers: Any
    ) -> None:
        call = player(OTHER_PHONE, pause_scale=0)  # ends with Twilio's "completed" callback
        call.play(queue_caller(ALICE.account, ALICE.pin, "balances"))
        stored = runtime.sessions.load(call.call_sid)
        assert stored is not None and stored.over
        assert runtime.sessions.by_ref(stored.state.ref) is None
        # marked over, nothing else: the proofs and the queue are as they were
        assert stored.state.proofs == ["pin"] and stored.state.queue == "balances"

    def test_marking_an_unknown_call_over_creates_nothing(self, redis: Any) -> None:
        store = SessionStore(redis, 3600)
        assert store.mark_over("CA" + "7" * 32) is False
        assert redis.keys("*") == []


class TestSimulatorReadsTasks:
    def test_the_task_attributes_are_parsed(self) -> None:
        response = VoiceResponse()
        response.enqueue(workflow_sid=WORKFLOW).task('{"intent": "balances"}')
        (enqueue,) = parse_twiml(str(response))
        assert enqueue.attributes == {"intent": "balances"}  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("<Response><Enqueue>q<Task>{}</Task></Enqueue></Response>", "needs <Enqueue"),
            (f'<Response><Enqueue workflowSid="{WORKFLOW}"><Task>{{x</Task></Enqueue></Response>',
             "not JSON"),
            (f'<Response><Enqueue workflowSid="{WORKFLOW}"><Task>[1]</Task></Enqueue></Response>',
             "JSON object"),
            ('<Response><Enqueue workflowSid="WW12"><Task>{}</Task></Enqueue></Response>',
             "Workflow SID"),
        ],
    )  # fmt: skip
    def test_a_task_twilio_would_refuse_is_an_error(self, body: str, message: str) -> None:
        with pytest.raises(TwimlError, match=message):
            parse_twiml(body)
