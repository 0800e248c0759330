"""Forgetting what earlier test calls left behind for test customers and test numbers.

`ivr flows test --url` plays every scenario against one running service, so the failures,
abuse windows and send counts of one scenario would meet the next (a right PIN then answered
"We could not verify your identity"). In process each scenario gets a fresh Redis; over HTTP
the runner calls `forget_test_identities` before each scenario instead. It deletes named keys
only, built by `ivr.store.keys`, never a pattern: a dev or staging operation on accounts and
numbers that belong to the tests. Shared state stays: the audit stream, the service-wide
abuse window and the per-country send counter, which no one account or number owns.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis import Redis

from ivr.assurance import METHODS
from ivr.auth.abuse import number_bucket
from ivr.store import keys


def identity_keys(accounts: Iterable[str], numbers: Iterable[str]) -> list[str]:
    """Every key of per-account and per-number state a call can leave behind."""
    found: list[str] = []
    for account in accounts:
        found += [keys.failures(account, method) for method in METHODS]
        found += [
            keys.abuse_account(account),
            keys.abuse_account_alerted(account),
            keys.sends("account", account),
            keys.service_code(account),
        ]
    for number in numbers:
        bucket = number_bucket(number)
        found += [
            keys.abuse_number(bucket),
            keys.abuse_refused(bucket),
            keys.sends("destination", number),
            keys.lookup(number),
        ]
    return list(dict.fromkeys(found))


def forget_test_identities(redis: Redis, accounts: Iterable[str], numbers: Iterable[str]) -> int:
    """Delete the state of these accounts and numbers as if they had never called; returns how
    many keys existed. The customer records themselves stay."""
    doomed = identity_keys(accounts, numbers)
    return int(redis.delete(*doomed)) if doomed else 0
