"""`forget_test_identities`: before each scenario of `ivr flows test --url`, what earlier calls
left for the test customers and their numbers is deleted, and nobody else's state.

Whole calls through the webhooks build the state (failed PINs, texts asked for, a service code,
a cached lookup) for two customers; forgetting one leaves none of its keys and every key of the
other, and its right PIN opens the door again where it was locked out.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from ivr.dev.customers import DemoCustomer
from ivr.errors import IvrError
from ivr.flows.scenario_http import OverHttp
from ivr.runtime import Runtime
from ivr.settings import load_settings
from ivr.store import keys
from ivr.store.test_identities import forget_test_identities
from tests.conftest import ALICE, API_TOKEN, BOB, PlayerFactory, enrol
from tests.support import pin_caller, queue_caller

WRONG = "000000"


def leave_traces(app: Flask, player: PlayerFactory, redis: Any, who: DemoCustomer) -> None:
    """Texts asked for, failures up to the calling number's limit (IVR_ABUSE_NUMBER_FAILURES,
    6), a service code issued, a lookup cached."""
    card_by_sms = queue_caller(who.account, who.pin, "card-services by sms")
    player(from_number=who.phone, pause_scale=0).play(card_by_sms)
    for _ in range(3):
        player(from_number=who.phone, pause_scale=0).play(pin_caller(who.account, WRONG, WRONG))
    issued = app.test_client().post(
        "/api/service-codes",
        json={"account": who.account},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert issued.status_code == 201
    redis.set(keys.lookup(who.phone), "{}")  # as the worker caches Twilio Lookup's answer


def naming(redis: Any, who: DemoCustomer) -> dict[bytes, bytes]:
    """Every key naming the customer's account or phone, but its record: name -> dump."""
    record = {keys.customer(who.account).encode(), keys.phone(who.phone).encode()}
    return {
        name: redis.dump(name)
        for name in redis.keys("*")
        if name not in record and (who.account.encode() in name or who.phone.encode() in name)
    }


def test_forgetting_a_test_customer_leaves_none_of_its_state_and_all_of_the_others(
    app: Flask, runtime: Runtime, player: PlayerFactory, redis: Any
) -> None:
    for who in (ALICE, BOB):
        enrol(runtime, who)
        leave_traces(app, player, redis, who)
    locked = player(from_number=ALICE.phone, pause_scale=0).play(
        queue_caller(ALICE.account, ALICE.pin, "balances")
    )
    assert locked.queue is None
    alice, bob = naming(redis, ALICE), naming(redis, BOB)
    for built in (
        keys.failures(ALICE.account, "pin"),
        keys.abuse_number(ALICE.phone),
        keys.abuse_refused(ALICE.phone),
        keys.abuse_account(ALICE.account),
        keys.sends("account", ALICE.account),
        keys.sends("destination", ALICE.phone),
        keys.service_code(ALICE.account),
        keys.lookup(ALICE.phone),
    ):
        assert built.encode() in alice, f"the calls left no {built}"

    gone = forget_test_identities(redis, [ALICE.account], [ALICE.phone])

    assert gone == len(alice)
    assert naming(redis, ALICE) == {}
    assert naming(redis, BOB) == bob
    assert runtime.customers.get(ALICE.account) is not None
    again = player(from_number=ALICE.phone, pause_scale=0).play(
        queue_caller(ALICE.account, ALICE.pin, "balances")
    )
    assert again.queue == "balances"


def test_over_url_without_the_service_redis_the_run_is_refused() -> None:
    settings = load_settings(twilio_auth_token="t" * 32, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(IvrError) as refused:
        OverHttp("http://127.0.0.1:1", settings, None, [])
    message = str(refused.value)
    assert message.startswith("--url needs the service's Redis to isolate scenarios")
    assert "\n" not in message and "127.0.0.1:1" not in message
