"""Bounded bodies and signed parameters only, over real HTTP against gunicorn on a real Redis
(SECURITY 1, 27, 29).

A 96 MB body used to be parsed whole before the signature was even checked, growing a web worker
by over 100 MB; a multipart body, which Twilio's signature does not cover, advanced a call
signed over the bare URL; a repeated `Digits` was acted on. Each is refused here before anything
changes, and the worker's memory is read from /proc.
"""

from __future__ import annotations

import secrets
import select
import socket
from pathlib import Path

import pytest
import redis
import requests
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from ivr.simulator import FAKE_ACCOUNT_SID, Gather, parse_twiml
from tests.support import SIGNATURE_HEADER, audit_events, sign

BODY = 96 * 1024 * 1024
CHUNK = 64 * 1024
ALLOWED_GROWTH_KIB = 8 * 1024  # "a few MB": the app and a 64 KiB body, never the 96 MB
FORM = "application/x-www-form-urlencoded"


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of `pid`, in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def stream(port: int, head: str, body_size: int, *, chunked: bool) -> bytes:
    """Send `head` then up to `body_size` bytes of body, stopping as soon as an answer comes;
    returns what came back (the server may close before the body is all sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head.encode())
        piece = b"a" * CHUNK
        frame = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
        sent = 0
        try:
            while sent < body_size:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(frame)
                sent += CHUNK
            if chunked and sent >= body_size:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us after answering; the answer is still in our receive buffer
        try:
            return sock.recv(4096)
        except ConnectionResetError:
            return b""


def call_params(call_sid: str, **extra: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": FAKE_ACCOUNT_SID,
        "From": "+14155550100",
        "To": "+15005550001",
        "CallStatus": "in-progress",
        "Direction": "inbound",
        **extra,
    }


def start_call(base_url: str, token: str) -> tuple[str, str]:
    """A call started the way Twilio starts one; returns its CallSid and the next action."""
    call_sid = "CA" + secrets.token_hex(16)
    params = call_params(call_sid)
    url = base_url + "/voice"
    reply = requests.post(url, data=params, headers=sign(token, url, params), timeout=10)
    assert reply.status_code == 200, reply.text
    (gather,) = [v for v in parse_twiml(reply.text) if isinstance(v, Gather)]
    assert gather.action is not None
    return call_sid, gather.action


class TestLargeBodies:
    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    def test_96_mb_body_is_413_and_the_worker_does_not_grow(
        self, web, auth_token, rdb, chunked: bool
    ) -> None:
        pid = web.worker_pid()
        before = memory_kib(pid)
        length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY}"
        signature = sign(auth_token, web.base_url + "/voice", {})[SIGNATURE_HEADER]
        head = (
            f"POST /voice HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\nContent-Type: {FORM}\r\n"
            f"{SIGNATURE_HEADER}: {signature}\r\n{length}\r\n\r\n"
        )
        answer = stream(web.port, head, BODY, chunked=chunked)

        after = memory_kib(pid)
        assert after["VmHWM"] - before["VmHWM"] < ALLOWED_GROWTH_KIB, (before, after)
        assert after["VmRSS"] - before["VmRSS"] < ALLOWED_GROWTH_KIB, (before, after)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert list(rdb.scan_iter("ivr:call:*")) == []

    def test_service_code_api_body_over_the_bound_is_a_json_413(self, web, api_token) -> None:
        reply = requests.post(
            web.base_url + "/api/service-codes",
            data=b'{"account": "12345678", "pad": "' + b"x" * 200_000 + b'"}',
            headers={"Authorization": f"Bearer {api_token}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert reply.status_code == 413
        assert "error" in reply.json()

    def test_a_request_line_or_headers_over_the_bounds_are_refused(self, web) -> None:
        # Unsigned, so the app would say 403: gunicorn refuses them before the app runs.
        long_line = requests.post(web.base_url + "/voice?x=" + "a" * 3000, timeout=10)
        # gunicorn 23 (pyproject.toml says why) says 400 with its reason; 26 and later say 414.
        assert long_line.status_code == 400
        assert "Request Line is too large" in long_line.text
        many = {f"X-Pad-{i}": "x" for i in range(60)}
        assert requests.post(web.base_url + "/voice", headers=many, timeout=10).status_code == 431
        big = {"X-Pad": "x" * 5000}
        assert requests.post(web.base_url + "/voice", headers=big, timeout=10).status_code == 431


class TestOnlySignedParametersCount:
    def test_multipart_signed_over_the_bare_url_changes_nothing(
        self, web, auth_token, rdb: redis.Redis
    ) -> None:
        call_sid, action = start_call(web.base_url, auth_token)
        before = rdb.hgetall(f"ivr:call:{call_sid}")
        audit_before = audit_events(rdb)
        url = web.base_url + action
        fields = {k: (None, v) for k, v in call_params(call_sid, Digits="12345678").items()}

        reply = requests.post(url, files=fields, headers=sign(auth_token, url, {}), timeout=10)

        assert reply.status_code == 415
        assert rdb.hgetall(f"ivr:call:{call_sid}") == before
        assert audit_events(rdb) == audit_before

    def test_multipart_start_creates_no_call(self, web, auth_token, rdb: redis.Redis) -> None:
        url = web.base_url + "/voice"
        fields = {k: (None, v) for k, v in call_params("CA" + secrets.token_hex(16)).items()}
        reply = requests.post(url, files=fields, headers=sign(auth_token, url, {}), timeout=10)
        assert reply.status_code == 415
        assert list(rdb.scan_iter("ivr:call:*")) == []

    def test_a_repeated_digits_is_refused(self, web, auth_token, rdb: redis.Redis) -> None:
        call_sid, action = start_call(web.base_url, auth_token)
        before = rdb.hgetall(f"ivr:call:{call_sid}")
        audit_before = audit_events(rdb)
        url = web.base_url + action
        form = MultiDict(list(call_params(call_sid, Digits="12345678").items()))
        form.add("Digits", "87654321")
        signature = RequestValidator(auth_token).compute_signature(url, form)

        reply = requests.post(
            url,
            data=list(form.items(multi=True)),
            headers={SIGNATURE_HEADER: signature},
            timeout=10,
        )

        assert reply.status_code == 400
        assert rdb.hgetall(f"ivr:call:{call_sid}") == before
        assert audit_events(rdb) == audit_before
