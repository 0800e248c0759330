"""The customers' phones: the codes texted to each, read from the outbox as it grows.

One reader for every caller of a run: it reads only what was appended since it last looked
(`Outbox.read_from`), so the thousandth SMS caller does not parse the 999 texts before it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ivr.outbox import Outbox
from ivr.simulator.phone import CODE_IN_TEXT


class Texts:
    def __init__(self, outbox: Path) -> None:
        self.outbox = Outbox(outbox)
        self.count = 0  # texts read so far
        self._offset = 0
        # phone -> (code, sent at), oldest first
        self._codes: dict[str, list[tuple[str, float]]] = {}
        self._lock = threading.Lock()

    def newest_code(self, phone: str, since: float) -> tuple[str, float] | None:
        """(code, sent at) of the newest text to `phone` sent at or after `since` (wall clock)."""
        self.refresh()
        with self._lock:
            for code, at in reversed(self._codes.get(phone, ())):
                if at >= since:
                    return code, at
        return None

    def refresh(self) -> int:
        """Read what the worker appended since the last look; the number of texts so far."""
        with self._lock:
            messages, self._offset = self.outbox.read_from(self._offset)
            for message in messages:
                if message.channel != "sms":
                    continue
                self.count += 1
                found = CODE_IN_TEXT.search(message.body)
                if found is not None:
                    self._codes.setdefault(message.to, []).append((found.group(1), message.at))
            return self.count
