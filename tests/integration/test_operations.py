"""Operating the real stack: gunicorn with two workers and a real `ivr worker`, both logging JSON.

Signed calls over HTTP; then the scrape (answered by either gunicorn worker) must show every
process's figures: the calls, the authentication outcomes, the enqueue, the worker's sends, and
the latency histogram summed over both gunicorn workers; readiness follows the worker; and
nothing any process logged names the caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ivr.outbox import Outbox
from ivr.processes import web_command
from ivr.simulator import HttpTransport, Keys
from ivr.simulator.phone import Phone
from ivr.store.customers import Customer
from tests.integration.conftest import PIN
from tests.support import make_player, seed_customer

ACCOUNT = "12345678"
PHONE = "+14155550100"
METRICS_TOKEN = "integration-metrics-token-0123"
CALLS = 3


@pytest.fixture
def env(outbox_path: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "IVR_OUTBOX": str(outbox_path),
        "IVR_METRICS_TOKEN": METRICS_TOKEN,
        "IVR_LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }


@pytest.fixture
def web2(process_launcher: Callable[..., Any], env: dict[str, str]) -> Any:
    """The production web command with two gunicorn workers (so two processes' figures)."""
    return process_launcher(web_command("127.0.0.1:{port}", 2), env, serves=True)


def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = requests.get(
        f"{base_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5
    )
    assert reply.status_code == 200, reply.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def value(figures: dict[Any, float], name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def scripted(*answers: Any) -> Callable[[Any, list[str]], Any]:
    """Answers each question with the next of `answers` (a callable is asked at the prompt),
    then stays silent so the IVR ends the call its own way."""
    left = list(answers)

    def answer(gather: Any, heard: list[str]) -> Any:
        step = left.pop(0) if left else None
        return step(gather) if callable(step) else step

    return answer


def gunicorn_workers(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def test_figures_of_every_process_reach_one_scrape(
    web2: Any,
    worker_factory: Callable[..., Any],
    env: dict[str, str],
    auth_token: str,
    pin_hash: str,
    redis_url: str,
    outbox_path: Path,
    tmp_path: Path,
) -> None:
    seed_customer(redis_url, Customer(account=ACCOUNT, phone=PHONE, pin_hash=pin_hash))
    ready = requests.get(f"{web2.base_url}/readyz", timeout=5)
    assert (ready.status_code, ready.text) == (503, "worker")
    worker = worker_factory(env)
    ready = requests.get(f"{web2.base_url}/readyz", timeout=5)
    assert (ready.status_code, ready.text) == (200, "ok")
    assert len(gunicorn_workers(web2.pid)) == 2

    phone = Phone(Outbox(outbox_path))
    codes: list[str] = []

    def key_in_code(gather: Any) -> Keys:
        code = phone.latest_code()
        assert code is not None
        codes.append(code)
        return Keys(f"{code}#")

    for _ in range(CALLS):
        caller = scripted(
            Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{PIN}#"), Keys("2"), Keys("1"), key_in_code
        )
        result = make_player(web2.base_url, auth_token, HttpTransport(), from_number=PHONE).play(
            caller
        )
        assert result.outcome == "enqueued", result.transcript()
    wrong_pin = scripted(Keys(f"{ACCOUNT}#"), Keys("1"), Keys("999999#"))
    make_player(web2.base_url, auth_token, HttpTransport(), from_number=PHONE).play(wrong_pin)

    figures = scrape(web2.base_url)
    assert value(figures, "ivr_calls_started_total", kind="inbound") == CALLS + 1
    assert value(figures, "ivr_authentications_total", method="pin", outcome="success") == CALLS
    assert value(figures, "ivr_authentications_total", method="pin", outcome="failure") == 1
    assert value(figures, "ivr_authentications_total", method="sms_otp", outcome="success") == CALLS
    enqueued = value(figures, "ivr_enqueues_total", queue="card-services", assurance="two_factor")
    assert enqueued == CALLS
    assert value(figures, "ivr_sends_total", channel="sms", outcome="sent") == CALLS  # worker's
    assert value(figures, "ivr_workers") == 1
    assert value(figures, "ivr_worker_queue_jobs", state="queued") == 0
    # Every webhook answered, whichever gunicorn worker took it, is in the one histogram.
    incoming = value(figures, "ivr_webhook_seconds_count", endpoint="voice.incoming")
    assert incoming == CALLS + 1
    assert (
        value(figures, "ivr_webhook_seconds_bucket", endpoint="voice.step", le="+Inf") >= CALLS * 5
    )
    written = {p.name.split("_")[-1] for p in (tmp_path / "metrics").glob("histogram_*.db")}
    assert len(written) == 2, written  # both gunicorn workers answered some webhooks

    # Logs: one JSON object a line, in gunicorn's, the app's and the worker's output alike.
    web2.stop()
    worker.stop()
    for proc in (web2, worker):
        text = proc.log()
        parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert parsed, proc
        for secret in (PHONE, PHONE[1:], PIN, ACCOUNT, *codes):
            assert secret not in text, (proc, secret)
    web_lines = [json.loads(line) for line in web2.log().splitlines() if line.strip()]
    assert any(line.get("logger") == "gunicorn.error" for line in web_lines)
    assert any(line.get("logger") == "gunicorn.access" for line in web_lines)
    sids = {line["call_sid"] for line in web_lines if "call_sid" in line and "event" not in line}
    assert len(sids) == CALLS + 1
    assert all(re.fullmatch(r"CA[0-9a-f]{32}", sid) for sid in sids)


def test_metrics_are_refused_without_the_token_and_probes_answer_any_host(
    web2: Any,
) -> None:
    assert requests.get(f"{web2.base_url}/metrics", timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert requests.get(f"{web2.base_url}/metrics", headers=wrong, timeout=5).status_code == 401
    internal = {"Host": "10.0.3.7:8000"}
    reply = requests.get(f"{web2.base_url}/healthz", headers=internal, timeout=5)
    assert (reply.status_code, reply.text) == (200, "ok")
    assert requests.post(f"{web2.base_url}/voice", headers=internal, timeout=5).status_code == 403


def test_metrics_are_not_served_without_a_token(web: Any) -> None:
    assert requests.get(f"{web.base_url}/metrics", timeout=5).status_code == 404
    assert requests.get(f"{web.base_url}/healthz", timeout=5).text == "ok"


def test_a_server_given_no_metrics_directory_makes_its_own_and_removes_it(
    process_launcher: Callable[..., Any], tmp_path: Path
) -> None:
    """`ivr serve` and the Procfile set no PROMETHEUS_MULTIPROC_DIR: gunicorn's config makes a
    private one for the server's life."""
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = {"TMPDIR": str(private_tmp), "IVR_METRICS_TOKEN": METRICS_TOKEN}
    env["PROMETHEUS_MULTIPROC_DIR"] = ""  # unset, as in a fresh shell
    web = process_launcher(web_command("127.0.0.1:{port}", 2), env, serves=True)
    requests.get(f"{web.base_url}/healthz", timeout=5)
    [made] = private_tmp.glob("ivr-metrics-*")
    assert scrape(web.base_url)  # multiprocess mode answers
    assert web.stop() == 0
    assert not made.exists()
