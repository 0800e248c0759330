"""The load generator's HTTP: stdlib `http.client`, one connection per request, each request
timed and counted by kind as it is answered.

One connection per request, as gunicorn's sync workers answer anyway (they close after each
response): a realistic caller's requests are seconds apart, longer than any keep-alive a server
would hold for it, so reusing connections would mostly meet closed ones. It also keeps the
generator cheap: no `requests` session per call, no copies of request and answer bodies kept
(a run sends hundreds of thousands).
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from bench import kinds
from ivr.simulator import Reply, Sent, TransportError

TIMEOUT_S = 15.0  # Twilio's own read timeout


@dataclass(frozen=True)
class Timed:
    kind: str
    done: float  # time.monotonic() when the answer was in
    elapsed: float
    status: int  # 0: no HTTP answer


class Recorder:
    """Every request's kind, time and status, in the order answered (list.append is atomic)."""

    def __init__(self, steps: dict[str, str]) -> None:
        self.steps = steps
        self.timed: list[Timed] = []

    def record(self, url: str, reply: Reply, started: float) -> None:
        done = time.monotonic()
        sent = Sent(url, urlsplit(url).path, {}, reply, done - started, done)
        kind = kinds.kind_of(sent, self.steps)
        self.timed.append(Timed(kind, done, done - started, reply.status))

    def between(self, start: float, end: float) -> list[Timed]:
        return [t for t in self.timed if start <= t.done < end]


class LoopbackTransport:
    """A `Transport` for `CallPlayer`, safe to share between threads."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        body = urlencode(params)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        return self._send("POST", url, body, headers | form)

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        return self._send("GET", url, None, headers)

    def _send(self, method: str, url: str, body: str | None, headers: dict[str, str]) -> Reply:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        started = time.monotonic()
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=TIMEOUT_S)
        try:
            conn.request(method, target, body, headers | {"Connection": "close"})
            response = conn.getresponse()
            data = response.read()
            reply = Reply(
                response.status,
                data.decode("utf-8", errors="replace"),
                response.getheader("Content-Type", ""),
            )
        except (OSError, http.client.HTTPException) as exc:
            self.recorder.record(url, Reply(0, str(exc), ""), started)
            raise TransportError(f"{method} {url} failed: {exc}") from exc
        finally:
            conn.close()
        self.recorder.record(url, reply, started)
        return reply
