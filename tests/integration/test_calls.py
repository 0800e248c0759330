"""Whole phone calls, signed like Twilio's, over real HTTP to real gunicorn on a real Redis.

Every call here is played by the simulator's `CallPlayer` through `HttpTransport`: each webhook is
a real signed POST to a gunicorn process running the production app, and every bit of call state
lives in a real redis-server.  Customers are seeded straight into that Redis, hashed with the same
pepper and argon2 parameters the web processes use.

Grouped by concept: callers who prove who they are reach their queue; two failures end the
authentication path; an unknown account sounds exactly like a wrong secret; only Twilio may drive a
call; a Redis outage fails closed; any web process can serve any request; Twilio's retries count
once; status callbacks change nothing.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import requests
from twilio.request_validator import RequestValidator

from ivr.auth.knowledge import SecretHasher, enrol
from ivr.simulator import (
    FAKE_ACCOUNT_SID,
    CallResult,
    Enqueue,
    Gather,
    Hangup,
    HttpTransport,
    Keys,
    Reply,
    Say,
    Speech,
    Transport,
    parse_twiml,
    scripted,
)
from ivr.simulator.player import CallerInput
from ivr.store.customers import Customer
from ivr.store.server import RedisServer
from tests.support import (
    SIGNATURE_HEADER,
    DeliverTwice,
    TimedTransport,
    assert_well_served,
    audit_events,
    authentications,
    call_keys,
    make_player,
    never_enqueued,
    redis_contents,
    seed_customer,
    sign,
    webhook_bodies,
)

ACCOUNT = "12345678"
PHONE = "+14155550100"
PIN = "583920"
PASSCODE = "purple elephant 42"

UNKNOWN_ACCOUNT = "87654321"
UNKNOWN_PHONE = "+14155550199"
WRONG_PINS = ("482915", "739164")
WRONG_PASSCODE = "green giraffe 17"

OTHER_ROUTE = "We could not verify your identity on this call"
APOLOGY = "We are sorry, we cannot take your call right now"
FAILURE_PROMPT = "That did not match our records. You have 1 attempt left."

TWILIO_BUDGET_BOUND = 10.0  # seconds; Twilio gives up after 15 s, we want to be well inside it


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hashed_secrets(pepper: str) -> dict[str, str]:
    """PIN and passcode hashes made the way enrolment makes them (the passcode normalised) and the
    web process checks them (its pepper, default argon2 parameters); made once per module because
    argon2 is deliberately slow."""
    hasher = SecretHasher(pepper=pepper)
    return {
        "pin_hash": enrol(hasher, "pin", PIN),
        "passcode_hash": enrol(hasher, "passcode", PASSCODE),
    }


def customer_record(hashed: dict[str, str]) -> Customer:
    return Customer(account=ACCOUNT, phone=PHONE, **hashed)


@pytest.fixture
def customer(redis_url: str, hashed_secrets: dict[str, str]) -> Customer:
    """Account 12345678, phone +14155550100, PIN 583920, passcode "purple elephant 42"."""
    return seed_customer(redis_url, customer_record(hashed_secrets))


#: Every caller here calls from the customer's phone unless the test says otherwise.
player = partial(make_player, from_number=PHONE)


def assert_no_clear_secret(conn: redis.Redis, result: CallResult, *typed: str) -> None:
    """What the caller typed or said is in no URL and nowhere in Redis (SECURITY 6, 11, 23)."""
    dump = redis_contents(conn)
    urls = " ".join(event.url for event in result.events)
    for secret in typed:
        assert secret.encode() not in dump, f"{secret!r} stored in Redis"
        assert secret not in urls, f"{secret!r} in a webhook URL"


def call_params(
    call_sid: str, *, from_number: str = PHONE, status: str = "ringing"
) -> dict[str, str]:
    """The parameters Twilio posts on every request of an inbound call."""
    return {
        "CallSid": call_sid,
        "AccountSid": FAKE_ACCOUNT_SID,
        "From": from_number,
        "To": "+15005550001",
        "Caller": from_number,
        "Called": "+15005550001",
        "CallStatus": status,
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def post(url: str, params: dict[str, str], headers: dict[str, str]) -> requests.Response:
    return requests.post(url, data=params, headers=headers, timeout=15, allow_redirects=False)


def next_action(body: str) -> str:
    """Where the caller's answer to this TwiML's question will be posted."""
    (gather,) = [verb for verb in parse_twiml(body) if isinstance(verb, Gather)]
    assert gather.action is not None
    return gather.action


def with_netloc(url: str, netloc: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------------------------
# Authenticated callers reach the queue they asked for
# --------------------------------------------------------------------------------------------


class TestAuthenticatedCallsReachTheirQueue:
    def test_pin_reaches_balances(self, web, auth_token, customer, rdb) -> None:
        call = player(web.base_url, auth_token)
        result = call.play(scripted(Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{PIN}#"), Keys("1")))

        assert_well_served(result)
        assert result.outcome == "enqueued", result.transcript()
        assert result.queue == "balances"
        assert result.said("you are verified")
        assert authentications(rdb, call.call_sid) == [("pin", "success")]
        assert_no_clear_secret(rdb, result, PIN)

    def test_spoken_passcode_reaches_the_balance_queue(
        self, web, auth_token, customer, rdb
    ) -> None:
        call = player(web.base_url, auth_token)
        result = call.play(
            scripted(
                Keys(f"{ACCOUNT}#"),
                Speech("passcode"),
                Speech("Purple elephant, forty-two."),
                Speech("my account balance please"),
            )
        )

        assert_well_served(result)
        assert result.outcome == "enqueued", result.transcript()
        assert result.queue == "balances"
        assert authentications(rdb, call.call_sid) == [("passcode", "success")]
        assert_no_clear_secret(rdb, result, "purpleelephant42", "elephant")

    def test_caller_id_star_uses_the_account_on_file(self, web, auth_token, customer, rdb) -> None:
        call = player(web.base_url, auth_token, from_number=PHONE)
        result = call.play(scripted(Keys("*#"), Keys("1"), Keys(f"{PIN}#"), Keys("0")))

        assert_well_served(result)
        assert result.outcome == "enqueued", result.transcript()
        assert result.queue == "general"
        (event,) = [e for e in audit_events(rdb, call.call_sid) if e["event"] == "authenticate"]
        assert event["account"] == ACCOUNT
        assert event["outcome"] == "success"

    def test_caller_id_alone_authenticates_nothing(self, web, auth_token, customer, rdb) -> None:
        """The right number calling is identification only: the PIN is still required."""
        call = player(web.base_url, auth_token, from_number=PHONE)
        result = call.play(
            scripted(
                Keys("*#"), Keys("1"), Keys(f"{WRONG_PINS[0]}#"),
                Keys("1"), Keys(f"{WRONG_PINS[1]}#"),
            )
        )  # fmt: skip

        assert_well_served(result)
        assert result.outcome == "hung_up", result.transcript()
        assert never_enqueued(result)


# --------------------------------------------------------------------------------------------
# Two failures in a call end authentication: another route, never an agent
# --------------------------------------------------------------------------------------------


class TestTwoFailuresEndAuthentication:
    def _assert_sent_elsewhere(self, result: CallResult) -> None:
        assert_well_served(result)
        assert result.outcome == "hung_up", result.transcript()
        assert never_enqueued(result), result.transcript()
        assert result.said(FAILURE_PROMPT)
        assert result.said(OTHER_ROUTE)
        assert result.heard[-1].startswith(OTHER_ROUTE)
        assert parse_twiml(webhook_bodies(result)[-1])[-1] == Hangup()

    def test_wrong_pin_twice(self, web, auth_token, customer, rdb) -> None:
        call = player(web.base_url, auth_token)
        result = call.play(
            scripted(
                Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{WRONG_PINS[0]}#"),
                Keys("1"), Keys(f"{WRONG_PINS[1]}#"),
            )
        )  # fmt: skip

        self._assert_sent_elsewhere(result)
        assert authentications(rdb, call.call_sid) == [("pin", "failure"), ("pin", "failure")]
        assert_no_clear_secret(rdb, result, *WRONG_PINS)

    def test_wrong_pin_then_wrong_passcode(self, web, auth_token, customer, rdb) -> None:
        call = player(web.base_url, auth_token)
        result = call.play(
            scripted(
                Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{WRONG_PINS[0]}#"),
                Keys("2"), Speech(WRONG_PASSCODE),
            )
        )  # fmt: skip

        self._assert_sent_elsewhere(result)
        assert authentications(rdb, call.call_sid) == [
            ("pin", "failure"),
            ("passcode", "failure"),
        ]
        assert_no_clear_secret(rdb, result, WRONG_PINS[0], "giraffe")

    def test_the_call_stays_ended_when_replayed(self, web, auth_token, customer, rdb) -> None:
        """After the other-route message, replaying the call's last gather with the right PIN
        (as an attacker replaying captured traffic would) opens nothing."""
        call = player(web.base_url, auth_token)
        result = call.play(
            scripted(
                Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{WRONG_PINS[0]}#"),
                Keys("1"), Keys(f"{WRONG_PINS[1]}#"),
            )
        )  # fmt: skip
        self._assert_sent_elsewhere(result)

        last_gather = [e for e in result.events if e.kind == "gather"][-1]
        params = {**last_gather.params, "Digits": PIN}
        reply = post(last_gather.url, params, sign(auth_token, last_gather.url, params))
        assert reply.status_code == 200
        assert "<Enqueue" not in reply.text
        assert ("pin", "success") not in authentications(rdb, call.call_sid)


# --------------------------------------------------------------------------------------------
# An unknown account sounds exactly like a wrong secret (no enumeration)
# --------------------------------------------------------------------------------------------


class TestUnknownAccountIsIndistinguishable:
    def test_typed_unknown_account_sounds_like_wrong_pin(self, web, auth_token, customer) -> None:
        def play(account: str) -> CallResult:
            call = player(web.base_url, auth_token)
            return call.play(
                scripted(
                    Keys(f"{account}#"), Keys("1"), Keys(f"{WRONG_PINS[0]}#"),
                    Keys("1"), Keys(f"{WRONG_PINS[1]}#"),
                )
            )  # fmt: skip

        known = play(ACCOUNT)
        unknown = play(UNKNOWN_ACCOUNT)

        assert_well_served(known)
        assert_well_served(unknown)
        assert known.outcome == unknown.outcome == "hung_up"
        assert len(webhook_bodies(known)) == 6  # start + five gathers
        assert webhook_bodies(unknown) == webhook_bodies(known)  # byte for byte
        assert [e.content_type for e in unknown.events] == [e.content_type for e in known.events]

    def test_unknown_caller_id_sounds_like_wrong_pin(self, web, auth_token, customer) -> None:
        def play(from_number: str) -> CallResult:
            call = player(web.base_url, auth_token, from_number=from_number)
            return call.play(
                scripted(
                    Keys("*#"), Keys("1"), Keys(f"{WRONG_PINS[0]}#"),
                    Keys("1"), Keys(f"{WRONG_PINS[1]}#"),
                )
            )  # fmt: skip

        known = play(PHONE)
        unknown = play(UNKNOWN_PHONE)

        assert_well_served(known)
        assert_well_served(unknown)
        assert webhook_bodies(unknown) == webhook_bodies(known)


# --------------------------------------------------------------------------------------------
# Only Twilio may drive a call: unsigned and forged requests are refused with no side effect
# --------------------------------------------------------------------------------------------


def forgeries(url: str, params: dict[str, str], token: str) -> dict[str, tuple[dict, dict]]:
    """(params actually sent, headers) for each way a request can fail the signature check."""
    tampered = {**params, "From": UNKNOWN_PHONE}
    garbage = base64.b64encode(secrets.token_bytes(20)).decode()
    return {
        "no signature header": (params, {}),
        "empty signature": (params, {SIGNATURE_HEADER: ""}),
        "garbage signature": (params, {SIGNATURE_HEADER: garbage}),
        "signed with another token": (params, sign("not-" + token, url, params)),
        "signed for another URL": (params, sign(token, "https://evil.example/voice", params)),
        "parameters changed after signing": (tampered, sign(token, url, params)),
    }


class TestOnlyTwilioMayDriveACall:
    def test_unsigned_and_forged_requests_get_403_and_write_nothing(
        self, web, auth_token, customer, rdb
    ) -> None:
        call_sid = new_call_sid()
        targets = {
            "/voice": call_params(call_sid),
            "/voice/step/identify?seq=0": {**call_params(call_sid), "Digits": ACCOUNT},
            "/voice/status": call_params(call_sid, status="completed"),
            "/voice/fallback": call_params(call_sid),
        }
        failures = []
        for path, params in targets.items():
            url = web.base_url + path
            for case, (sent, headers) in forgeries(url, params, auth_token).items():
                reply = post(url, sent, headers)
                if reply.status_code != 403:
                    failures.append(f"{case} to {path}: HTTP {reply.status_code} {reply.text!r}")

        assert not failures, "\n".join(failures)
        assert call_keys(rdb) == []
        assert audit_events(rdb) == []

        # Control: the same request, correctly signed, is served -- so the 403s above were the
        # signature check and nothing else.
        url = web.base_url + "/voice"
        reply = post(url, targets["/voice"], sign(auth_token, url, targets["/voice"]))
        assert reply.status_code == 200
        assert call_keys(rdb) == [f"ivr:call:{call_sid}".encode()]

    def test_forged_gather_mid_call_changes_nothing(self, web, auth_token, customer, rdb) -> None:
        call_sid = new_call_sid()
        url = web.base_url + "/voice"
        params = call_params(call_sid)
        assert post(url, params, sign(auth_token, url, params)).status_code == 200
        before = rdb.hgetall(f"ivr:call:{call_sid}")
        audit_before = audit_events(rdb)

        gather_url = web.base_url + "/voice/step/identify?seq=0"
        gather = {**call_params(call_sid, status="in-progress"), "Digits": ACCOUNT}
        for case, (sent, headers) in forgeries(gather_url, gather, auth_token).items():
            reply = post(gather_url, sent, headers)
            assert reply.status_code == 403, case

        assert rdb.hgetall(f"ivr:call:{call_sid}") == before
        assert audit_events(rdb) == audit_before


# --------------------------------------------------------------------------------------------
# Redis stopped mid-call: a polite apology, never a 500 and never an agent
# --------------------------------------------------------------------------------------------


class BreakRedisAtStep:
    """Answers gathers from a script, but breaks Redis just before answering the given step."""

    def __init__(self, breaker: Callable[[], None], step: str, *inputs: CallerInput) -> None:
        self.breaker = breaker
        self.step_path = f"/voice/step/{step}"
        self.script = scripted(*inputs)
        self.broken = False

    def __call__(self, gather: Gather, heard_so_far: list[str]) -> CallerInput | None:
        if not self.broken and gather.action and self.step_path in gather.action:
            self.breaker()
            self.broken = True
        return self.script(gather, heard_so_far)


class TestRedisOutage:
    @pytest.mark.parametrize("failure", ["stopped", "hung"])
    def test_redis_lost_mid_call_fails_closed_in_time(
        self,
        failure: str,
        tmp_path: Path,
        web_on_redis: Callable[..., Any],
        auth_token: str,
        hashed_secrets: dict[str, str],
    ) -> None:
        """ "stopped": redis-server shut down (connections refused).  "hung": the process frozen
        with SIGSTOP, so connections stay open and nothing answers (a partition, a stuck host)."""
        server = RedisServer(tmp_path / "doomed-redis", persist=False)
        server.start()
        frozen: list[int] = []

        def break_redis() -> None:
            if failure == "stopped":
                server.stop()
            else:
                assert server.pid is not None
                os.kill(server.pid, signal.SIGSTOP)
                frozen.append(server.pid)

        try:
            seed_customer(server.url, customer_record(hashed_secrets))
            web = web_on_redis(server.url)
            transport = TimedTransport(HttpTransport())
            call = player(web.base_url, auth_token, transport=transport)
            # The caller types the RIGHT PIN after Redis is gone: still no agent.
            inputs = BreakRedisAtStep(
                break_redis, "pin", Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{PIN}#")
            )
            result = call.play(inputs)
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            server.stop()

        transcript = result.transcript(requests=True)
        assert inputs.broken, transcript
        assert inputs.script.remaining == [], transcript

        pin_answer = [e for e in result.events if e.kind == "gather"][-1]
        assert "/voice/step/pin" in pin_answer.url
        assert pin_answer.status == 200, transcript
        verbs = parse_twiml(pin_answer.body)
        assert any(isinstance(v, Say) and v.text.startswith(APOLOGY) for v in verbs), transcript
        assert verbs[-1] == Hangup()
        assert not any(isinstance(v, Enqueue) for v in verbs)
        assert result.outcome == "hung_up"
        assert never_enqueued(result)
        assert all(e.status != 500 for e in result.events), transcript

        (elapsed,) = [s.elapsed for s in transport.sent if s.url == pin_answer.url]
        assert elapsed < TWILIO_BUDGET_BOUND, f"answer took {elapsed:.1f}s with Redis {failure}"


# --------------------------------------------------------------------------------------------
# Web processes are stateless: any of them can serve any request of a call
# --------------------------------------------------------------------------------------------


class AlternatingTransport:
    """Sends each request to the next of several app processes, as a load balancer might.

    The player signs for the URL it built; the request really goes elsewhere, so it is re-signed
    for the URL it is sent to (which is what Twilio signs: the URL it requests).
    """

    def __init__(self, inner: Transport, base_urls: list[str], auth_token: str) -> None:
        self.inner = inner
        self.netlocs = [urlsplit(u).netloc for u in base_urls]
        self.validator = RequestValidator(auth_token)
        self.sent: list[tuple[str, str]] = []  # (netloc, path?query)

    def _route(self, url: str) -> str:
        netloc = self.netlocs[len(self.sent) % len(self.netlocs)]
        routed = with_netloc(url, netloc)
        parts = urlsplit(routed)
        self.sent.append((netloc, parts.path + (f"?{parts.query}" if parts.query else "")))
        return routed

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        url = self._route(url)
        signature = self.validator.compute_signature(url, params)
        return self.inner.post(url, params, {**headers, SIGNATURE_HEADER: signature})

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        url = self._route(url)
        signature = self.validator.compute_signature(url, {})
        return self.inner.get(url, {**headers, SIGNATURE_HEADER: signature})


def wait_for_lines(proc, lines: list[str], timeout: float = 5.0) -> str:
    """The process log once it contains every line fragment (access logs may lag a little)."""
    deadline = time.monotonic() + timeout
    while True:
        log = proc.log()
        if all(line in log for line in lines) or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


class TestStatelessWebProcesses:
    def test_one_call_served_alternately_by_two_processes(
        self, web_pair, auth_token, customer, rdb
    ) -> None:
        first, second = web_pair
        transport = AlternatingTransport(
            HttpTransport(), [first.base_url, second.base_url], auth_token
        )
        call = player(first.base_url, auth_token, transport=transport)
        result = call.play(scripted(Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{PIN}#"), Keys("1")))

        assert_well_served(result)
        assert result.outcome == "enqueued", result.transcript(requests=True)
        assert result.queue == "balances"
        assert authentications(rdb, call.call_sid) == [("pin", "success")]

        # Six requests (start, four gathers, status), strictly alternating between the two.
        assert len(transport.sent) == 6
        netlocs = [netloc for netloc, _ in transport.sent]
        assert netlocs == [urlsplit(first.base_url).netloc, urlsplit(second.base_url).netloc] * 3

        for proc in (first, second):
            mine = [
                path for netloc, path in transport.sent if netloc == urlsplit(proc.base_url).netloc
            ]
            expected = [f'"POST {path} HTTP/1.1" ' for path in mine]
            log = wait_for_lines(proc, expected)
            for line in expected:
                assert line in log, f"{proc} never logged {line}\n{log[-3000:]}"
            served = [ln for ln in log.splitlines() if '"POST /voice' in ln]
            assert len(served) == len(mine), "\n".join(served)


# --------------------------------------------------------------------------------------------
# Twilio retries: the same signed request twice gets the same answer and counts once
# --------------------------------------------------------------------------------------------


class TestTwilioRetries:
    def test_retried_wrong_pin_gets_the_same_answer_and_counts_once(
        self, web, auth_token, customer, rdb
    ) -> None:
        transport = DeliverTwice(HttpTransport(), "/voice/step/pin")
        call = player(web.base_url, auth_token, transport=transport)
        result = call.play(
            scripted(
                Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{WRONG_PINS[0]}#"),
                Keys("1"), Keys(f"{PIN}#"), Keys("1"),
            )
        )  # fmt: skip

        first, retry = transport.replies
        assert first.status == retry.status == 200
        assert retry.body == first.body
        assert FAILURE_PROMPT in first.body

        # One failure counted, not two: the caller still has an attempt left and uses it.
        assert authentications(rdb, call.call_sid) == [("pin", "failure"), ("pin", "success")]
        assert_well_served(result)
        assert result.outcome == "enqueued", result.transcript()
        assert result.queue == "balances"

    def test_retried_first_request_starts_the_call_once(
        self, web, auth_token, customer, rdb
    ) -> None:
        transport = DeliverTwice(HttpTransport(), "/voice")
        call = player(web.base_url, auth_token, transport=transport)
        result = call.play(scripted(Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{PIN}#"), Keys("1")))

        first, retry = transport.replies
        assert first.status == retry.status == 200
        assert retry.body == first.body
        assert_well_served(result)
        assert result.queue == "balances"
        started = [e for e in audit_events(rdb, call.call_sid) if e["event"] == "call_started"]
        assert len(started) == 1

    def test_concurrent_retry_to_two_processes_counts_once(
        self, web_factory, auth_token, customer, rdb
    ) -> None:
        """Twilio retries while the first attempt is still running, and behind a load balancer
        the two copies can land on different processes at the same moment. Both processes know
        the same public URL, so the one signed request is valid on either."""
        public = "https://ivr.example.com"
        first = web_factory({"IVR_PUBLIC_URL": public})
        second = web_factory({"IVR_PUBLIC_URL": public})
        call_sid = new_call_sid()

        def signed(path: str, params: dict[str, str]) -> dict[str, str]:
            token = {"I-Twilio-Idempotency-Token": secrets.token_hex(16)}
            return {**sign(auth_token, public + path, params), **token}

        # Bring the call to the PIN question, one request on each process in turn.
        path = "/voice"
        for proc, digits in [(first, None), (second, ACCOUNT), (first, "1")]:
            params = call_params(call_sid, status="in-progress" if digits else "ringing")
            params |= {"Digits": digits} if digits else {}
            reply = post(proc.base_url + path, params, signed(path, params))
            assert reply.status_code == 200, reply.text
            path = next_action(reply.text)
        assert path.startswith("/voice/step/pin?")

        # The same signed wrong-PIN request, byte for byte, to both processes at once.
        params = {**call_params(call_sid, status="in-progress"), "Digits": WRONG_PINS[0]}
        headers = signed(path, params)
        barrier = threading.Barrier(2)
        replies: dict[int, requests.Response] = {}

        def deliver(proc) -> None:
            barrier.wait()
            replies[proc.port] = post(proc.base_url + path, params, headers)

        threads = [threading.Thread(target=deliver, args=(proc,)) for proc in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)

        a, b = replies[first.port], replies[second.port]
        assert a.status_code == b.status_code == 200
        assert a.content == b.content
        assert FAILURE_PROMPT in a.text
        assert authentications(rdb, call_sid) == [("pin", "failure")]
        assert int(rdb.get(f"ivr:failures:{ACCOUNT}:pin") or 0) == 1


# --------------------------------------------------------------------------------------------
# Status callbacks: acknowledged with 204, no TwiML, no change to the call
# --------------------------------------------------------------------------------------------


class TestStatusCallback:
    def test_status_callback_at_the_end_of_a_call_gets_204(self, web, auth_token, customer) -> None:
        result = player(web.base_url, auth_token).play(
            scripted(Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{PIN}#"), Keys("1"))
        )
        status = result.status_callback
        assert status is not None
        assert status.status == 204
        assert status.body == ""

    def test_status_callback_mid_call_only_marks_the_call_over(
        self, web, auth_token, customer, rdb
    ) -> None:
        call_sid = new_call_sid()
        url = web.base_url + "/voice"
        params = call_params(call_sid)
        assert post(url, params, sign(auth_token, url, params)).status_code == 200
        gather_url = web.base_url + "/voice/step/identify?seq=0"
        gather = {**call_params(call_sid, status="in-progress"), "Digits": ACCOUNT}
        assert post(gather_url, gather, sign(auth_token, gather_url, gather)).status_code == 200
        before = rdb.hgetall(f"ivr:call:{call_sid}")
        audit_before = audit_events(rdb)

        status_url = web.base_url + "/voice/status"
        for status in ("in-progress", "completed", "failed"):
            sent = {**call_params(call_sid, status=status), "CallDuration": "7"}
            reply = post(status_url, sent, sign(auth_token, status_url, sent))
            assert reply.status_code == 204
            assert reply.content == b""

        # Only the `over` marker the agent API reads is added; the call's state is untouched.
        assert rdb.hgetall(f"ivr:call:{call_sid}") == {**before, b"over": b"1"}
        assert audit_events(rdb) == audit_before
