"""Clients that hang on to their connection hold up no caller (SECURITY 4), over real HTTP to
gunicorn as production starts it.

gunicorn 26 and 27 close each connection "gracefully" on the gthread worker's main loop: they
wait up to 2 s for the client to close its end first, one client after another. With 27.0.1 a
caller's first webhook waited 6 s behind the eight idle clients here, and every further idle
client adds up to 2 s: past Twilio's 15 s budget the caller hears Twilio's error message.
gunicorn 24 and 25 have the opposite fault: a worker told to stop waits out its whole graceful
timeout (30 s) while any client holds an idle kept-alive connection, so every restart or deploy
took 30 s and ended in a SIGKILL. pyproject.toml keeps gunicorn at 23.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.support import ringing_call, sign

LINGERERS = 8
PROMPT_S = 1.0  # an idle test server answers in milliseconds; a stall costs 2 s per lingerer
STOP_S = 5.0  # a worker's graceful timeout is 30 s; an idle connection must not be waited for


@pytest.fixture
def lingering(web) -> Iterator[list[socket.socket]]:
    """Clients that each read a whole answer, then keep their end of the connection open."""
    sockets = []
    try:
        for _ in range(LINGERERS):
            sock = socket.create_connection(("127.0.0.1", web.port), timeout=30)
            sockets.append(sock)
            sock.sendall(
                f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
        for sock in sockets:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_a_call_is_answered_at_once_while_clients_keep_their_connections_open(
    web, auth_token, lingering
) -> None:
    url = web.base_url + "/voice"
    params = ringing_call()

    started = time.monotonic()
    reply = requests.post(url, data=params, headers=sign(auth_token, url, params), timeout=30)
    waited = time.monotonic() - started

    assert reply.status_code == 200
    assert "<Gather" in reply.text
    assert waited < PROMPT_S, f"the caller waited {waited:.1f} s behind {LINGERERS} idle clients"


def test_the_server_stops_at_once_while_a_client_holds_an_idle_connection(web) -> None:
    idle = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    idle.request("GET", "/healthz")  # HTTP/1.1: the connection is kept alive after the answer
    assert idle.getresponse().read() == b"ok"
    try:
        started = time.monotonic()
        code = web.stop(timeout=STOP_S * 3)
        took = time.monotonic() - started
    finally:
        idle.close()

    assert code == 0, f"exit {code} after {took:.1f} s (negative: killed)"
    assert took < STOP_S, f"took {took:.1f} s to stop behind one idle connection"
