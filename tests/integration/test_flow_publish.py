"""`ivr flows publish` against two real gunicorn processes on one real Redis: a publish reaches
both without a restart, and a call in progress finishes on the version it started with."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from ivr.auth.knowledge import SecretHasher, enrol
from ivr.simulator import Enqueue, Gather, parse_twiml
from ivr.store.customers import Customer
from tests.integration.conftest import FLOWS_DIR, WebProcess, service_env
from tests.support import edit, gather_action, said, seed_customer, sign

ACCOUNT = "12345678"
PHONE = "+14155550100"
PIN = "583920"
METHOD_PROMPT = "For PIN, press 1. For passcode, press 2."
IVR = [sys.executable, "-c", "from ivr.cli import main; main()"]


class HttpCall:
    """One call, request by request, each to whichever web process the test names."""

    def __init__(self, sid: str, auth_token: str) -> None:
        self.sid, self.token, self.action = sid, auth_token, "/voice"

    def post(self, web: WebProcess, **given: str) -> str:
        params = {"CallSid": self.sid, "AccountSid": "AC" + "5e" * 16, "From": PHONE, **given}
        url = web.base_url + self.action
        reply = requests.post(url, data=params, headers=sign(self.token, url, params), timeout=10)
        assert reply.status_code == 200, reply.text
        verbs = parse_twiml(reply.text)
        if any(isinstance(v, Gather) for v in verbs):
            self.action = gather_action(reply.text)
        return reply.text


def variant(tag: str) -> str:
    text = (FLOWS_DIR / "default.yaml").read_text()
    return edit(text, METHOD_PROMPT, f"{tag}. {METHOD_PROMPT}")


def ivr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IVR, *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_call_in_progress_keeps_its_version_across_a_publish_on_every_process(
    redis_url: str,
    auth_token: str,
    pepper: str,
    tmp_path: Path,
    web_factory: Callable[..., WebProcess],
    rdb: Any,
) -> None:
    flows = tmp_path / "flows"  # the flow alone: its scenario tests hear the original prompts
    flows.mkdir()
    flow = flows / "default.yaml"
    flow.write_text(variant("Version A"))
    hasher = SecretHasher(pepper, time_cost=1, memory_cost=1024)
    seed_customer(redis_url, Customer(ACCOUNT, PHONE, pin_hash=enrol(hasher, "pin", PIN)))
    env = {**service_env(redis_url, auth_token=auth_token), "IVR_FLOWS_DIR": str(flows)}
    published = ivr(env, "flows", "publish", str(flow))
    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("flow default: published ")
    # Both started on the original file: only Redis tells them of A, and then of B.
    one, two = web_factory(), web_factory()

    on_a = HttpCall("CA" + "a" * 32, auth_token)
    on_a.post(one)
    flow.write_text(variant("Version B"))
    published = ivr(env, "flows", "publish", "default")
    assert published.returncode == 0, published.stderr
    version_b = published.stdout.split()[3]

    assert said(on_a.post(two, Digits=ACCOUNT)).startswith("Version A.")
    on_a.post(one, Digits="1")
    on_a.post(two, Digits=PIN)
    queued = parse_twiml(on_a.post(one, Digits="1"))
    assert [v.queue for v in queued if isinstance(v, Enqueue)] == ["balances"]

    for n, web in enumerate((one, two)):
        call = HttpCall("CA" + str(n) * 32, auth_token)
        call.post(web)
        assert said(call.post(web, Digits=ACCOUNT)).startswith("Version B.")

    versions = ivr(env, "flows", "versions", "default")
    assert versions.returncode == 0, versions.stderr
    lines = versions.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith(version_b) and lines[1].endswith("live")
    rolled = ivr(env, "flows", "rollback", "default")
    assert rolled.returncode == 0 and rolled.stdout == f"flow default: {lines[0][:12]} is live\n"
    call = HttpCall("CA" + "c" * 32, auth_token)
    call.post(two)
    assert said(call.post(two, Digits=ACCOUNT)).startswith("Version A.")
