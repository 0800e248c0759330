"""The development outbox: where SMS, email and calls go when no provider is configured.

A JSON-lines file, not Redis, because a message body holds the code in clear and codes must
never rest in Redis; it is the stand-in for the customer's phone and mailbox, read by
`ivr outbox` and by the call simulator.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Channel = Literal["sms", "email", "call"]


@dataclass(frozen=True)
class OutboxMessage:
    channel: Channel
    to: str
    body: str
    subject: str | None = None
    call_sid: str | None = None  # a callback: the CallSid the simulator answers with
    at: float = field(default_factory=time.time)


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, message: OutboxMessage) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(asdict(message), ensure_ascii=False) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def messages(self) -> list[OutboxMessage]:
        """Oldest first; a torn or foreign line is skipped rather than fatal."""
        return self.read_from(0)[0]

    def read_from(self, offset: int) -> tuple[list[OutboxMessage], int]:
        """The messages appended after byte `offset`, and the offset to read from next, so a
        reader that keeps up does not parse the whole file again; a line still being written
        waits for the next read."""
        try:
            with self.path.open("rb") as outbox:
                outbox.seek(offset)
                data = outbox.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(OutboxMessage(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        return out, offset + end

    def since(self, at: float) -> list[OutboxMessage]:
        return [m for m in self.messages() if m.at >= at]
