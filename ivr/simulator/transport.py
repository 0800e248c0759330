"""How the simulated Twilio reaches the IVR: in-process (WSGI) for tests, real HTTP for `ivr call`.

The player only ever speaks through a `Transport`, so the same call script can run against the
Flask app object in a unit test and against a server on a socket, where proxies, ports and
URL reconstruction can go wrong in ways the in-process client never shows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urldefrag, urlsplit

import requests

from ivr.errors import IvrError

if TYPE_CHECKING:
    from werkzeug.test import TestResponse

__all__ = [
    "HttpTransport",
    "Reply",
    "Sent",
    "TimedTransport",
    "Transport",
    "TransportError",
    "WsgiTransport",
]


class TransportError(IvrError):
    """The request never got an HTTP answer (refused, timed out, bad URL).

    Twilio would play its stock error message to the caller; the player records the call as
    outcome "error" instead of letting the exception escape, so a test can assert on it.
    """


@dataclass(frozen=True)
class Reply:
    """The parts of an HTTP answer Twilio looks at: nothing else reaches the caller."""

    status: int
    body: str
    content_type: str


class Transport(Protocol):
    """Delivers one webhook request exactly as given; signing and parameters are the player's job.

    `url` is the full URL Twilio would request (it is also the URL that was signed), so a
    transport must not rewrite it: a transport that "fixes" URLs would hide signature bugs.
    """

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        """POST `params` form-encoded to `url`."""
        ...

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        """GET `url`; for GET webhooks Twilio puts its parameters in the query string."""
        ...


def _split(url: str) -> tuple[str, str, str]:
    """Split a full URL into (scheme://host[:port], path, query) for the WSGI test client.

    The fragment is dropped: a server never sees it (Twilio uses it only for its own
    connection overrides such as `#rt=`).
    """
    url, _fragment = urldefrag(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TransportError(f"not an absolute http(s) URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}", parts.path or "/", parts.query


class WsgiTransport:
    """Calls a WSGI app (normally the Flask app) in-process through its test client.

    The scheme and host of each URL become the test client's `base_url`, so `request.url` inside
    the app equals the URL the player signed -- the same property real Twilio traffic has.
    Cookies are not kept between requests: the IVR must carry call state by CallSid, and a
    simulator that silently kept a Flask session would hide a dependency on cookies.
    """

    def __init__(self, app: Any) -> None:
        """`app` is a Flask app (uses `app.test_client()`) or any other WSGI callable."""
        if hasattr(app, "test_client"):
            self._client = app.test_client(use_cookies=False)
        else:
            from werkzeug.test import Client

            self._client = Client(app, use_cookies=False)

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        """POST form data to the app without a socket."""
        base_url, path, query = _split(url)
        response = self._client.post(
            path, base_url=base_url, query_string=query, data=params, headers=headers
        )
        return self._reply(response)

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        """GET from the app without a socket."""
        base_url, path, query = _split(url)
        response = self._client.get(path, base_url=base_url, query_string=query, headers=headers)
        return self._reply(response)

    @staticmethod
    def _reply(response: TestResponse) -> Reply:
        try:
            return Reply(
                status=response.status_code,
                body=response.get_data(as_text=True),
                content_type=response.content_type or "",
            )
        finally:
            response.close()


class HttpTransport:
    """Sends real HTTP requests with `requests`, for `ivr call` against a running server.

    HTTP redirects are not followed (a 3xx is reported as the answer), and `timeout` is the
    read timeout Twilio applies (15 s); `connect_timeout` mirrors Twilio's 10 s connect limit.
    """

    def __init__(self, timeout: float = 15.0, *, connect_timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        """POST form data over the network."""
        return self._send("POST", url, params, headers)

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        """GET over the network."""
        return self._send("GET", url, None, headers)

    def _send(
        self, method: str, url: str, params: dict[str, str] | None, headers: dict[str, str]
    ) -> Reply:
        url, _fragment = urldefrag(url)
        try:
            response = requests.request(
                method,
                url,
                data=params,
                headers=headers,
                timeout=(self.connect_timeout, self.timeout),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise TransportError(f"{method} {url} failed: {exc}") from exc
        with response:
            content_type = response.headers.get("Content-Type", "")
            # requests assumes ISO-8859-1 for text/* without a charset; TwiML is UTF-8.
            encoding = response.encoding if "charset=" in content_type.lower() else "utf-8"
            body = response.content.decode(encoding or "utf-8", errors="replace")
            return Reply(status=response.status_code, body=body, content_type=content_type)


@dataclass(frozen=True)
class Sent:
    """One request a `TimedTransport` delivered, with its answer and how long that took."""

    url: str
    path: str
    params: dict[str, str]
    reply: Reply  # status 0: no HTTP answer at all, as the player records it
    elapsed: float
    done: float  # time.monotonic() when the answer was in


class TimedTransport:
    """Wraps a transport and records every request with its answer and duration (`sent`, in
    order): how the tests check that each answer was quick, and what the benchmark measures.

    Safe to share between threads, so concurrent calls can go through one instance.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.sent: list[Sent] = []
        self._lock = threading.Lock()

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        return self._timed(url, params, lambda: self.inner.post(url, params, headers))

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        return self._timed(url, {}, lambda: self.inner.get(url, headers))

    def _timed(self, url: str, params: dict[str, str], send: Callable[[], Reply]) -> Reply:
        started = time.monotonic()
        try:
            reply = send()
        except TransportError as exc:
            # A request that got no answer took time too; the player turns it into status 0.
            self._record(url, params, Reply(status=0, body=str(exc), content_type=""), started)
            raise
        self._record(url, params, reply, started)
        return reply

    def _record(self, url: str, params: dict[str, str], reply: Reply, started: float) -> None:
        done = time.monotonic()
        sent = Sent(url, urlsplit(url).path, dict(params), reply, done - started, done)
        with self._lock:
            self.sent.append(sent)
