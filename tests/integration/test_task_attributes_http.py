"""What reaches the queue, over real HTTP: gunicorn, a real `rq worker`, a real Redis, every
webhook signed (issue 7, items 2 and 6).

Every queue of the default flow, by every way into it, gets `<Enqueue workflowSid>` with a
`<Task>` whose attributes hold only the call's opaque reference, the intent, the assurance, the
methods and when, and the risk signals: no account, phone, email, name, address or PIN of the
customer there, in the queue name or in any URL. And every `StirVerstat` of the reference
parses into the call's attestation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis
import requests

from ivr.outbox import Outbox
from ivr.simulator import CallResult, HttpTransport
from ivr.simulator.phone import Phone
from ivr.store.customers import Customer
from tests.support import (
    QUEUE_PATHS,
    STIR_VERSTATS,
    TASK_KEYS,
    assert_no_personal_data,
    assert_well_served,
    make_player,
    personal_values,
    queue_caller,
    seed_customer,
    sign,
)

ACCOUNT = "12345678"
PHONE = "+14155550100"
EMAIL = "alice@example.com"
PIN = "583920"
OTHER_NUMBER = "+14155550123"
IVR_NUMBER = "+15005550001"
WORKFLOW = "WW" + "4d" * 16
REF = re.compile(r"[A-Za-z0-9_-]{16}")
INTENTS = {
    "balances": ("balances", ["pin"], "one_factor"),
    "general": ("general", ["pin"], "one_factor"),
    "card-services by sms": ("card-services", ["pin", "sms_otp"], "two_factor"),
    "card-services by callback": ("card-services", ["pin", "callback"], "two_factor"),
    "card-services by service code": ("card-services", ["pin", "service_code"], "two_factor"),
}
PERSONAL = personal_values(ACCOUNT, PHONE, EMAIL, PIN, "Alice Example", "1 Market Street")


@pytest.fixture
def customer(redis_url: str, pin_hash: str) -> Customer:
    return seed_customer(
        redis_url, Customer(account=ACCOUNT, phone=PHONE, email=EMAIL, pin_hash=pin_hash)
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """What web and worker share: the outbox (the customer's phone) and the TaskRouter workflow."""
    return {"IVR_OUTBOX": str(tmp_path / "outbox.jsonl"), "IVR_TASKROUTER_WORKFLOW_SID": WORKFLOW}


@pytest.fixture
def web(web_factory, env):
    return web_factory(env)


@pytest.fixture
def worker(worker_factory, env):
    return worker_factory(env)


def play(path: str, web, auth_token: str, api_token: str, outbox: Path) -> CallResult:
    """The customer, from another phone, takes `path` to its queue; a callback path is
    answered on the phone on file, and its result is the call back's."""
    phone = Phone(Outbox(outbox))
    service_code = None
    if path.endswith("service code"):
        reply = requests.post(
            f"{web.base_url}/api/service-codes",
            json={"account": ACCOUNT},
            headers={"Authorization": f"Bearer {api_token}"},
            timeout=10,
        )
        assert reply.status_code == 201, reply.text
        service_code = reply.json()["code"]
    caller = queue_caller(ACCOUNT, PIN, path, phone.latest_code, service_code)
    call = make_player(
        web.base_url,
        auth_token,
        HttpTransport(),
        from_number=OTHER_NUMBER,
        extra_params={"StirVerstat": "TN-Validation-Passed-C-Diverted"},
    )
    result = call.play(caller)
    assert_well_served(result)
    if not path.endswith("callback"):
        return result
    ringing = phone.wait_for_call(timeout=10)
    assert ringing is not None and ringing.call_sid is not None, "no call back placed"
    back = make_player(
        web.base_url, auth_token, HttpTransport(),
        from_number=IVR_NUMBER, to_number=PHONE, call_sid=ringing.call_sid,
        voice_path="/voice/callback", extra_params={"Direction": "outbound-api"},
    )  # fmt: skip
    answered = back.play(caller)
    assert_well_served(answered)
    return answered


class TestEveryQueue:
    def test_every_queue_gets_a_task_with_only_the_allowed_keys_and_nothing_personal(
        self, web, worker, auth_token, api_token, customer, rdb, env
    ) -> None:
        assert set(QUEUE_PATHS) == set(INTENTS)
        refs = []
        for path, (intent, methods, assurance) in INTENTS.items():
            result = play(path, web, auth_token, api_token, Path(env["IVR_OUTBOX"]))

            assert result.outcome == "enqueued", f"{path}\n{result.transcript(requests=True)}"
            enqueue = result.enqueue
            assert enqueue is not None and enqueue.workflow_sid == WORKFLOW
            attributes = enqueue.attributes
            assert attributes is not None and set(attributes) == TASK_KEYS, path
            assert attributes["intent"] == intent
            assert attributes["assurance"] == assurance
            assert [m["method"] for m in attributes["methods"]] == methods  # type: ignore[union-attr]
            expected = (
                {"attestation": "absent"}  # the call back: our own outbound call
                if path.endswith("callback")
                else {"attestation": "C", "attestation_path": "diverted"}
            )
            assert attributes["signals"] == expected, path
            assert_no_personal_data(result, PERSONAL)
            ref = attributes["call_ref"]
            assert isinstance(ref, str) and REF.fullmatch(ref)
            # the reference names this call, in Redis, for as long as the call lives
            assert rdb.get(f"ivr:callref:{ref}") == result.call_sid.encode()
            refs.append(ref)
        assert len(set(refs)) == len(refs)

    def test_a_finished_call_is_marked_over_and_keeps_its_proofs(
        self, web, auth_token, api_token, customer, rdb, env
    ) -> None:
        result = play("balances", web, auth_token, api_token, Path(env["IVR_OUTBOX"]))
        assert result.status_callback is not None and result.status_callback.status == 204
        call = rdb.hgetall(f"ivr:call:{result.call_sid}")
        assert call[b"over"] == b"1"
        state = json.loads(call[b"state"])
        assert state["proofs"] == ["pin"] and state["queue"] == "balances"


class TestStirVerstatOverHttp:
    def test_every_reference_value_parses_at_call_start(
        self, web, auth_token, rdb: redis.Redis
    ) -> None:
        url = f"{web.base_url}/voice"
        for number, (raw, value, path) in enumerate(STIR_VERSTATS):
            sid = f"CA{number:032x}"
            params = {
                "CallSid": sid,
                "AccountSid": "AC" + "5e" * 16,
                "From": OTHER_NUMBER,
                "To": IVR_NUMBER,
                "CallStatus": "ringing",
                "Direction": "inbound",
                "ApiVersion": "2010-04-01",
                "StirVerstat": raw,
            }
            reply = requests.post(
                url, data=params, headers=sign(auth_token, url, params), timeout=10
            )
            assert reply.status_code == 200, raw
            state = json.loads(rdb.hget(f"ivr:call:{sid}", "state") or b"{}")
            expected = {"attestation": value} | ({"attestation_path": path} if path else {})
            assert state["signals"] == expected, raw
