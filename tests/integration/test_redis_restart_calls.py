"""A Redis restart under calls in progress (issue 9, 5; SECURITY 25, 31), over real HTTP: a
real gunicorn on a real redis-server of the test's own, stopped and started again on the same
port in the middle of a signed call.

The web's pooled connections all die with the server; each command on one is sent again on a
new connection (redis-py's Retry, `ivr.runtime.WEB_RETRY`). So a call whose next webhook comes
once Redis is back carries on where it was; one whose webhook comes while Redis is away hears
the apology; neither gets a 500 or an agent, and the next call is served as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis import Redis

from ivr.simulator import CallResult, Gather, Keys, scripted
from ivr.simulator.player import CallerInput
from ivr.store.customers import Customer
from tests.integration.conftest import PIN, RestartableRedis
from tests.support import (
    APOLOGY,
    assert_well_served,
    authentications,
    make_player,
    never_enqueued,
    seed_customer,
)

ACCOUNT = "12345678"
PHONE = "+14155550100"
PIN_CALL = (Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{PIN}#"), Keys("1"))


class AtPin:
    """Answers a PIN call from a script, doing `then` just before the PIN is keyed."""

    def __init__(self, then: Callable[[], None]) -> None:
        self.then, self.done = then, False
        self.script = scripted(*PIN_CALL)

    def __call__(self, gather: Gather, heard: list[str]) -> CallerInput | None:
        if not self.done and "/voice/step/pin" in (gather.action or ""):
            self.then()
            self.done = True
        return self.script(gather, heard)


def no_500(result: CallResult) -> None:
    assert all(e.status != 500 for e in result.events), result.transcript(requests=True)


@pytest.fixture
def web(
    restarting_redis: RestartableRedis,
    web_on_redis: Callable[..., Any],
    pin_hash: str,
) -> Any:
    seed_customer(restarting_redis.url, Customer(account=ACCOUNT, phone=PHONE, pin_hash=pin_hash))
    return web_on_redis(restarting_redis.url)


def test_a_call_carries_on_over_a_redis_restart(
    restarting_redis: RestartableRedis, web: Any, auth_token: str
) -> None:
    def restart() -> None:
        restarting_redis.stop()
        restarting_redis.start()

    inputs = AtPin(restart)
    result = make_player(web.base_url, auth_token, from_number=PHONE).play(inputs)

    assert inputs.done
    assert_well_served(result)
    assert not result.said(APOLOGY), result.transcript()
    assert result.said("you are verified"), result.transcript()
    assert result.outcome == "enqueued"
    assert result.queue == "balances"


@pytest.mark.parametrize("away", [0.2, 3.0], ids=["back-within-the-retries", "away-longer"])
def test_a_webhook_while_redis_restarts_is_answered_and_the_next_call_is_served(
    restarting_redis: RestartableRedis, web: Any, auth_token: str, away: float
) -> None:
    def restart_meanwhile() -> None:
        restarting_redis.stop()
        restarting_redis.start_in(away)  # the PIN's webhook is sent meanwhile

    inputs = AtPin(restart_meanwhile)
    result = make_player(web.base_url, auth_token, from_number=PHONE).play(inputs)

    assert inputs.done
    no_500(result)
    (pin_answer,) = [e for e in result.events if "/voice/step/pin" in e.url]
    assert pin_answer.status == 200
    # Back within the web's retries (about 1 s): the call goes on; away longer: the apology.
    assert result.said(APOLOGY) == (away > 1), result.transcript()
    if result.said(APOLOGY):
        assert never_enqueued(result), result.transcript()
        assert result.outcome == "hung_up"
    else:
        assert result.said("you are verified"), result.transcript()

    assert restarting_redis.back.wait(10)
    after = make_player(web.base_url, auth_token, from_number=PHONE)
    served = after.play(scripted(*PIN_CALL))
    assert_well_served(served)
    assert served.outcome == "enqueued", served.transcript()
    with Redis.from_url(restarting_redis.url) as conn:
        assert authentications(conn, after.call_sid) == [("pin", "success")]
