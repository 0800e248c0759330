"""`ivr dev`'s parts: the demo customers, the data directory's state and lock, the children
and their supervision, the guardian, the flow watcher, and what it prints. The entry is
`ivr.devserver.run`."""

from __future__ import annotations

from collections.abc import Callable

Say = Callable[[str], None]
