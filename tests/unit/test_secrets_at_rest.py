"""No secret of a call in Redis, in URLs or in the log."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ivr.simulator import (
    Keys,
    Speech,
    scripted,
)
from ivr.store import keys
from tests.conftest import (
    ALICE,
    BASE_URL,
    BOB,
    PIN_CALL,
    PlayerFactory,
)
from tests.support import (
    WRONG_PIN,
    redis_snapshot,
    two_attempts,
)

SECRET_TEXTS = (
    ALICE.pin,
    WRONG_PIN,
    ALICE.passcode,
    "purpleelephant42",
    "Purple elephant, forty-two.",
    "orange tiger",
)


class TestNothingSecretAtRest:
    def test_no_secret_in_redis_urls_or_logs(
        self,
        player: PlayerFactory,
        customers: Any,
        redis: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        caplog.set_level(logging.DEBUG, logger="ivr")
        results = [
            player().play(scripted(*PIN_CALL)),
            player().play(
                scripted(
                    Keys(ALICE.account + "#"),
                    Keys("1"),
                    Keys(WRONG_PIN + "#"),
                    Keys("2"),
                    Speech("Purple elephant, forty-two.", confidence=0.9),
                    Keys("1"),
                )
            ),
            player().play(
                two_attempts(
                    ALICE.account, Speech("orange tiger 7"), Speech(ALICE.passcode, 0.1), "2"
                )
            ),
        ]
        assert [r.outcome for r in results] == ["enqueued", "enqueued", "hung_up"]

        stored = redis_snapshot(redis)
        everything = repr(stored).encode() + b"".join(
            k + v for value in stored.values() if isinstance(value, dict) for k, v in value.items()
        )
        for secret in SECRET_TEXTS:
            assert secret.encode() not in everything, secret
            for result in results:
                for event in result.events:
                    assert secret not in event.url
            for record in caplog.records:
                text = record.getMessage() + (record.exc_text or "") + repr(record.args)
                assert secret not in text, record
        assert caplog.records, "expected the webhooks to log something"

        for who in (ALICE, BOB):
            record = stored[keys.customer(who.account).encode()]
            assert record[b"pin_hash"].startswith(b"$argon2id$")
            assert record[b"passcode_hash"].startswith(b"$argon2id$")

    def test_gather_actions_carry_only_step_and_seq(
        self, player: PlayerFactory, customers: Any
    ) -> None:
        result = player().play(scripted(*PIN_CALL))
        for event in result.events:
            if event.kind == "gather":
                path = event.url.removeprefix(BASE_URL)
                assert path.startswith("/voice/step/")
                assert path.split("?", 1)[1].startswith("seq=")
                assert "&" not in path
