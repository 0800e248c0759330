"""The URL a signature is checked against, over real HTTP against gunicorn (SECURITY 3).

Built from the request's Host, that URL is whatever the sender says: a signature made for another
deployment of the same Twilio account validated here. gunicorn believed X-Forwarded-Proto from
127.0.0.1 whatever IVR_PROXY_HOPS said. Production (`ivr serve`, the Procfile) now refuses to
start without IVR_PUBLIC_URL or IVR_ALLOWED_HOSTS, every web launch trusts forwarded headers
only as IVR_PROXY_HOPS says, and a failed signature is explained in one log line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import pytest
import requests

from ivr.processes import _no_control_socket
from tests.support import SIGNATURE_HEADER, call_keys, ringing_call, sign

PUBLIC = "https://ivr.example.com"
OTHER = "ivr.other-bank.example"  # another deployment on the same Twilio account
IVR = [sys.executable, "-c", "from ivr.cli import main; main()"]


def post(
    web: Any,
    token: str,
    signed_url: str,
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """POST /voice to `web`, signed for `signed_url`, with extra `headers` (Host among them)."""
    sent = ringing_call()
    return requests.post(
        web.base_url + "/voice",
        data=sent,
        headers={**sign(token, signed_url, sent), **(headers or {})},
        timeout=10,
    )


class TestHosts:
    def test_a_foreign_host_is_refused_with_a_public_url(
        self, web_factory, auth_token, rdb
    ) -> None:
        web = web_factory({"IVR_PUBLIC_URL": PUBLIC})
        foreign = post(web, auth_token, PUBLIC + "/voice", {"Host": OTHER})
        assert foreign.status_code == 403
        assert call_keys(rdb) == []
        assert post(web, auth_token, PUBLIC + "/voice", {"Host": "ivr.example.com"}).ok

    def test_a_foreign_host_is_refused_with_allowed_hosts(
        self, web_factory, auth_token, rdb
    ) -> None:
        web = web_factory({"IVR_ALLOWED_HOSTS": "ivr.example.com"})
        # Signed for the URL the request names, as the other deployment's webhook would be.
        foreign = post(web, auth_token, f"http://{OTHER}/voice", {"Host": OTHER})
        assert foreign.status_code == 403
        assert call_keys(rdb) == []
        assert post(web, auth_token, "http://ivr.example.com/voice", {"Host": "ivr.example.com"}).ok
        assert "refused a request for host 'ivr.other-bank.example'" in web.log()

    def test_the_bare_app_factory_serves_loopback_only(
        self, process_launcher, auth_token, rdb
    ) -> None:
        """The old Procfile's command, with none of `ivr serve`'s checks or flags."""
        argv = [
            sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:{port}", "--workers", "1",
            *_no_control_socket(), "ivr.app:create_app()",
        ]  # fmt: skip
        web = process_launcher(argv, serves=True)
        foreign = post(web, auth_token, f"http://{OTHER}/voice", {"Host": OTHER})
        assert foreign.status_code == 403
        assert call_keys(rdb) == []
        assert post(web, auth_token, web.base_url + "/voice").ok


class TestForwardedHeaders:
    def test_x_forwarded_proto_from_loopback_is_ignored_with_no_hops(
        self, web, auth_token, rdb
    ) -> None:
        forwarded = {"X-Forwarded-Proto": "https"}
        https = web.base_url.replace("http://", "https://") + "/voice"
        assert post(web, auth_token, https, forwarded).status_code == 403
        assert call_keys(rdb) == []
        assert post(web, auth_token, web.base_url + "/voice", forwarded).ok

    def test_one_trusted_hop_is_believed(self, web_factory, auth_token) -> None:
        web = web_factory({"IVR_PROXY_HOPS": "1", "IVR_ALLOWED_HOSTS": "ivr.example.com"})
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ivr.example.com"}
        assert post(web, auth_token, PUBLIC + "/voice", forwarded).ok
        assert post(web, auth_token, web.base_url + "/voice", forwarded).status_code == 403


class TestSignatureFailureLog:
    def test_one_line_names_the_url_checked_and_the_likely_cause(self, web, auth_token) -> None:
        sent = ringing_call()
        signature = sign("a-token-from-another-account", web.base_url + "/voice", sent)
        url = web.base_url + "/voice"
        assert requests.post(url, data=sent, headers=signature, timeout=10).status_code == 403

        deadline = time.monotonic() + 5
        while "X-Twilio-Signature did not match" not in web.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [ln for ln in web.log().splitlines() if "X-Twilio-Signature did not match" in ln]
        assert len(lines) == 1, web.log()
        assert f"checked against {url} " in lines[0]
        assert "TWILIO_AUTH_TOKEN" in lines[0] and "IVR_PROXY_HOPS" in lines[0]
        assert auth_token not in web.log()
        assert signature[SIGNATURE_HEADER] not in web.log()


class TestIvrServe:
    def test_refuses_to_start_without_a_public_url_or_allowed_hosts(self, process_launcher) -> None:
        proc = process_launcher([*IVR, "serve", "--host", "127.0.0.1", "--port", "{port}"])
        deadline = time.monotonic() + 20
        while proc.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.returncode not in (None, 0), proc.log()
        lines = proc.log().strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("Error: IVR_PUBLIC_URL: not set;")
        assert "IVR_ALLOWED_HOSTS" in lines[0]

    @pytest.mark.parametrize(
        "env",
        [{"IVR_ALLOWED_HOSTS": "ivr.example.com"}, {"IVR_PUBLIC_URL": "http://ivr.example.com"}],
        ids=["allowed-hosts", "public-url"],
    )
    def test_serves_what_it_is_told_to(
        self, process_launcher, auth_token, rdb, env: dict[str, str]
    ) -> None:
        argv = [*IVR, "serve", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"]
        web = process_launcher(argv, env, serves=True)
        ours = {"Host": "ivr.example.com"}
        forwarded = {**ours, "X-Forwarded-Proto": "https"}
        assert post(web, auth_token, "http://ivr.example.com/voice", ours).ok
        assert post(web, auth_token, "https://ivr.example.com/voice", forwarded).status_code == 403
        foreign = post(web, auth_token, f"http://{OTHER}/voice", {"Host": OTHER})
        assert foreign.status_code == 403
        assert len(call_keys(rdb)) == 1
