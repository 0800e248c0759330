"""A cheap webhook is answered while PIN checks run on the same gunicorn worker (issue 9).

argon2-cffi releases the GIL, so under the gthread worker class (`processes.web_command`) the
other threads answer while some check PINs; a sync worker queued every webhook behind them.
The proof is ordering, not a stopwatch: each PIN request holds its call's lock in Redis while
argon2 runs, so the test waits until every PIN request holds its lock (all in flight at once,
which one sync worker never allows), sends a new call's first webhook, and requires its
answer while those PIN checks are still unanswered. The PIN hash is made expensive (argon2 t=10,
64 MiB), so each check takes far longer than a cheap webhook, even on a busy machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import redis
import requests

from ivr.auth.knowledge import SecretHasher, enrol
from ivr.processes import WEB_THREADS
from ivr.store import keys
from ivr.store.customers import Customer
from tests.support import seed_customer, sign

ACCOUNT, PIN = "31415926", "583920"
SLOW = WEB_THREADS - 1  # every thread but one checks a PIN
LOCKS_WAIT_S = 20.0


def sid(n: int) -> str:
    return f"CA{n:032x}"


def post(base: str, token: str, path: str, call: int, **params: str) -> requests.Response:
    params = {"CallSid": sid(call), "From": f"+1415555{call:04d}", **params}
    headers = sign(token, base + path, params)
    return requests.post(base + path, data=params, headers=headers, timeout=60)


def test_a_cheap_webhook_is_answered_while_pins_are_checked(
    web_factory: Callable[..., object], redis_url: str, rdb: redis.Redis, auth_token: str,
    pepper: str,
) -> None:  # fmt: skip
    hasher = SecretHasher(pepper, time_cost=10, memory_cost=65536)
    seed_customer(redis_url, Customer(ACCOUNT, "+14155550100", pin_hash=enrol(hasher, "pin", PIN)))
    web = web_factory()
    base = web.base_url  # type: ignore[attr-defined]
    for call in range(SLOW):  # each call up to its PIN prompt
        for path, digits in (("/voice", None), ("/voice/step/identify?seq=0", ACCOUNT),
                             ("/voice/step/choose_method?seq=1", "1")):  # fmt: skip
            extra = {"Digits": digits} if digits else {}
            assert post(base, auth_token, path, call, **extra).status_code == 200

    with ThreadPoolExecutor(SLOW) as pool:
        pins: list[Future[requests.Response]] = [
            pool.submit(post, base, auth_token, "/voice/step/pin?seq=2", call, Digits=PIN)
            for call in range(SLOW)
        ]
        deadline = time.monotonic() + LOCKS_WAIT_S
        while sum(rdb.exists(keys.call_lock(sid(c))) for c in range(SLOW)) < SLOW:
            assert time.monotonic() < deadline, (
                f"{SLOW} PIN checks never ran at once on one worker: "
                f"{[f.done() for f in pins]} answered"
            )
            time.sleep(0.005)
        cheap = post(base, auth_token, "/voice", SLOW)
        answered_meanwhile = [f.done() for f in pins]
        replies = [f.result() for f in pins]

    assert cheap.status_code == 200 and "<Gather" in cheap.text
    assert answered_meanwhile == [False] * SLOW, "a cheap webhook waited for the PIN checks"
    assert all(r.status_code == 200 and "you are verified" in r.text for r in replies)
