"""`ivr dev` publishes the flow file on each edit."""

from __future__ import annotations

import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from ivr.dev import Say
from ivr.errors import IvrError


class FlowWatcher:
    """Publishes the flow file each time it changes, through `ivr flows publish`'s own path, so
    the running service takes an edit without a restart, and keeps the last good version when
    the edit is broken."""

    def __init__(self, redis: Redis, path: Path, say: Say, every: float = 1.0) -> None:
        self.redis, self.path, self.say, self.every = redis, path, say, every
        self._mtime = self._stat()
        self._next = time.monotonic() + every

    def _stat(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def check(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.every
        mtime = self._stat()
        if mtime != self._mtime:
            self._mtime = mtime
            self.publish()

    def publish(self) -> None:
        from ivr.flows.publish import PublishRefused, publish_flow
        from ivr.store.flows import SHORT

        name = self.path.stem
        try:
            digest, new, _ = publish_flow(self.redis, self.path)
        except PublishRefused as exc:
            self.say(f"flow {name}: not published, the service keeps the last good version:")
            for line in exc.lines:
                self.say(f"  {line}")
            return
        except (IvrError, RedisError) as exc:  # the file does not parse; Redis went away
            self.say(f"flow {name}: not published, the service keeps the last good version:")
            for line in str(exc).splitlines():
                self.say(f"  {line}")
            return
        except Exception as exc:  # a bug in a check or the runner must not take `ivr dev` down
            self.say(
                f"flow {name}: not published ({type(exc).__name__}: {exc}); "
                "the service keeps the last good version"
            )
            return
        self.say(f"flow {name}: {'published' if new else 'unchanged'} {digest[:SHORT]}")
