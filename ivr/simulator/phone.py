"""The simulated customer's phone and mailbox: what the development outbox received.

`ivr call` shows new messages to the person playing the caller, can key in the latest code, and
answers the call back; the tests use the same pieces.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ivr.outbox import Outbox, OutboxMessage

CODE_IN_TEXT = re.compile(r"(?<![0-9])([0-9]{6,10})(?![0-9])")


class Phone:
    """Everything delivered to the outbox since this phone was picked up."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._seen = len(outbox.messages())
        self._start = self._seen

    def arrivals(self) -> list[OutboxMessage]:
        """Messages not shown before, oldest first."""
        messages = self.outbox.messages()
        new, self._seen = messages[self._seen :], len(messages)
        return new

    def latest_code(self) -> str | None:
        """The code in the newest text or email received since the phone was picked up."""
        return newest_code(self.outbox.messages()[self._start :], ("sms", "email"))

    def wait_for_call(self, timeout: float = 10.0) -> OutboxMessage | None:
        """The next call back to arrive, waiting up to `timeout` seconds for the worker."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.arrivals():
                if message.channel == "call":
                    return message
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)


def describe(message: OutboxMessage) -> str:
    if message.channel == "sms":
        return f"[text message to {message.to}] {message.body}"
    if message.channel == "email":
        body = " ".join(message.body.split())
        return f"[email to {message.to}] {message.subject}: {body}"
    return f"[phone {message.to} rings] {message.body}"


def newest_code(messages: list[OutboxMessage], channels: tuple[str, ...]) -> str | None:
    """The code in the newest of `messages` sent on one of `channels`."""
    for message in reversed(messages):
        if message.channel in channels:
            found = CODE_IN_TEXT.search(message.body)
            if found:
                return found.group(1)
    return None


def answering(ring: OutboxMessage) -> dict[str, Any]:
    """The call leg of a call back once the customer picks up, as `CallPlayer` keywords: Twilio
    posts it to the callback webhook, outbound, under the CallSid the service placed it with."""
    return {
        "call_sid": ring.call_sid,
        "to_number": ring.to,
        "voice_path": "/voice/callback",
        "extra_params": {"Direction": "outbound-api"},
    }
