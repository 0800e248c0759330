"""A call's lock lives one request, and only its holder may save (SECURITY 6, 25).

The lock used to outlive a dead holder by 20 s, so Twilio's retry waited 8 s and got the
apology. Its life is now one request's; the integration tier kills a worker holding it and checks
that the retry is served. Here: the bounds agree with Twilio's budget, a request that outlived its
lock cannot overwrite the request that took it over, and a release lost to a Redis blip does not
turn an answer already saved into the apology.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from ivr.flows.engine import CallState
from ivr.runtime import connect_redis
from ivr.store import keys
from ivr.store.sessions import LOCK_TIMEOUT, LOCK_WAIT, LockLost, SessionStore

SID = "CA" + "4e" * 16
TWILIO_BUDGET = 15  # seconds Twilio waits for a webhook's whole answer


def state(step: str = "identify", seq: int = 0) -> CallState:
    return CallState(call_sid=SID, caller="+14155550100", step=step, seq=seq)


def test_the_lock_fits_twilios_budget() -> None:
    socket_timeout = connect_redis("redis://127.0.0.1:1/0").connection_pool.connection_kwargs[
        "socket_timeout"
    ]
    # A live request holds it for at most one Redis command at its timeout plus a little work;
    # a retry behind a dead holder outwaits the lock and still answers inside Twilio's budget.
    assert socket_timeout < LOCK_TIMEOUT < LOCK_WAIT
    assert LOCK_WAIT + LOCK_TIMEOUT < TWILIO_BUDGET


def test_the_lock_taken_expires_within_one_request(redis: Any) -> None:
    with SessionStore(redis, 3600).locked(SID):
        assert 0 < redis.pttl(keys.call_lock(SID)) <= LOCK_TIMEOUT * 1000


def test_a_request_that_outlived_its_lock_saves_nothing(redis: Any) -> None:
    store = SessionStore(redis, 3600)
    with store.locked(SID) as lock:
        # Our lock expired mid-request and Twilio's retry took the call over and answered.
        redis.delete(keys.call_lock(SID))
        with store.locked(SID) as retry:
            with pytest.raises(LockLost):
                store.save(state("pin", 1), 0, "<Response>late</Response>", lock)
            assert redis.get(keys.call_lock(SID)) == retry.token  # the retry's lock is untouched
            store.save(state("choose_method", 1), 0, "<Response>retry</Response>", retry)
    stored = store.load(SID)
    assert stored is not None
    assert stored.state.step == "choose_method"
    assert stored.reply == "<Response>retry</Response>"


def test_the_holder_saves_while_it_holds_the_lock(redis: Any) -> None:
    store = SessionStore(redis, 3600)
    with store.locked(SID) as lock:
        store.save(state("choose_method", 1), 0, "<Response/>", lock)
    stored = store.load(SID)
    assert stored is not None and stored.state.step == "choose_method"
    assert not redis.exists(keys.call_lock(SID))


def test_a_lost_release_keeps_the_saved_answer(caplog: pytest.LogCaptureFixture) -> None:
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    store = SessionStore(redis, 3600)
    with store.locked(SID) as lock:
        store.save(state("choose_method", 1), 0, "<Response/>", lock)
    # A retry answered from the stored reply saves nothing, so it releases the lock itself.
    with store.take(SID) as retry:
        assert retry.stored is not None
        server.connected = False  # Redis blips just before the release
    server.connected = True
    stored = store.load(SID)
    assert stored is not None and stored.state.step == "choose_method"
    # The lock it could not release expires by itself within one request's life.
    assert 0 < redis.pttl(keys.call_lock(SID)) <= LOCK_TIMEOUT * 1000
    assert any("lock not released" in r.getMessage() for r in caplog.records)
