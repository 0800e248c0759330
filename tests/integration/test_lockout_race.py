"""The per-account lockout holds when many calls guess at once, against a real Redis.

Each attempt is counted (an atomic INCR) before argon2 checks it, so however many calls race,
no more than the cap of guesses are ever checked against the real hash.
"""

from __future__ import annotations

import random
import threading

import redis

from ivr.auth.knowledge import SecretHasher, enrol
from ivr.auth.verifier import Verifier
from ivr.flows.engine import CallState
from ivr.runtime import make_possession
from ivr.settings import load_settings
from ivr.store.audit import AuditLog
from ivr.store.counters import FailureCounter
from ivr.store.customers import Customer, RedisCustomerDirectory
from tests.support import lax_abuse_guard

ACCOUNT, PIN, CAP, CALLS = "12345678", "583920", 3, 20


def test_parallel_guesses_never_exceed_the_cap(rdb: redis.Redis, redis_url: str) -> None:
    hasher = SecretHasher()  # production argon2 cost: the race window is real
    directory = RedisCustomerDirectory(rdb)
    directory.add(Customer(ACCOUNT, "+14155550100", pin_hash=enrol(hasher, "pin", PIN)))
    audit = AuditLog(rdb)
    settings = load_settings(code_key="race-test-code-key-0123")
    abuse = lax_abuse_guard(rdb, audit)  # one number makes every guess: the cap is the test
    verifier = Verifier(
        directory, hasher, FailureCounter(rdb), audit, CAP,
        make_possession(settings, rdb, directory, audit, abuse), abuse,
    )  # fmt: skip
    guesses = [f"{n:06d}" for n in range(100000, 100000 + CALLS - 1)] + [PIN]
    random.Random(7).shuffle(guesses)
    start = threading.Barrier(CALLS)
    accepted: list[str] = []

    def call(n: int) -> None:
        state = CallState(call_sid=f"CA{n:032x}", caller="+14155550199", step="pin",
                          account=ACCOUNT)  # fmt: skip
        start.wait()
        if verifier.verify(state, "pin", guesses[n]):
            accepted.append(guesses[n])

    threads = [threading.Thread(target=call, args=(n,)) for n in range(CALLS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    outcomes = [e["outcome"] for e in audit.recent(100) if e["event"] == "authenticate"]
    assert len(outcomes) == CALLS
    checked = [o for o in outcomes if o != "locked"]
    assert len(checked) <= CAP, outcomes
    assert accepted in ([], [PIN])
    if not accepted:
        assert FailureCounter(rdb).count(ACCOUNT, "pin") == CAP  # and the PIN stays locked
