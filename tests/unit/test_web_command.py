"""Every web launch (`ivr serve`, `ivr dev`, the tests, the benchmark) goes through
`processes.web_command`, so the bounds and the proxy trust set there hold for all of them.

Read back through gunicorn's own option parser: what gunicorn will actually run with.
"""

from __future__ import annotations

import pytest
from gunicorn.config import Config

from ivr.processes import WEB_THREADS, WSGI_APP, web_command


def effective(argv: list[str]) -> Config:
    assert argv[1:3] == ["-m", "gunicorn"]
    cfg = Config()
    args = cfg.parser().parse_args(argv[3:])
    for name, value in vars(args).items():
        if value is not None and name != "args":
            cfg.set(name.lower(), value)
    assert args.args == [WSGI_APP]
    return cfg


def test_gunicorn_trusts_no_forwarded_header_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its default trusts X-Forwarded-Proto from 127.0.0.1, or whatever the environment says;
    # only the app's ProxyFix, set by IVR_PROXY_HOPS, may read those headers.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    cfg = effective(web_command("127.0.0.1:8000", 2, "--access-logfile", "-"))
    assert cfg.forwarded_allow_ips == []


def test_request_line_and_headers_are_bounded() -> None:
    cfg = effective(web_command("0.0.0.0:8000", 2))
    assert 0 < cfg.limit_request_line <= 2048
    assert 0 < cfg.limit_request_fields <= 50
    assert 0 < cfg.limit_request_field_size <= 4096


def test_an_argon2_check_blocks_only_its_own_thread() -> None:
    """gthread with threads: argon2-cffi releases the GIL, so the other threads of the same
    worker answer cheap webhooks while a PIN is checked (a sync worker queued them behind it)."""
    cfg = effective(web_command("127.0.0.1:8000", 2))
    assert cfg.worker_class_str == "gthread"
    assert cfg.threads == WEB_THREADS > 1
    assert effective(web_command("127.0.0.1:8000", 2, threads=8)).threads == 8
