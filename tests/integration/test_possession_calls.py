"""Possession factors end to end: real gunicorn, a real `rq worker` process, a real Redis.

A caller proves a PIN, asks for card services and steps up with something they have: a code the
worker texts or emails to the contact details on file, a call back to the number on file, or a
service code the customer's web backend asked the API for.  Every webhook is a signed POST from
the call simulator; the worker delivers into the development outbox (a file shared by the web
process and the worker) or to a real SMTP server on loopback, and the simulated caller keys in
what arrived there.  The `<Pause>` of a hold really waits, so the worker has time to deliver.

Grouped by concept: a texted code reaches card services and rests nowhere in clear; a retried
webhook sends one code; a worker that is down makes the caller hear so in time and choose again;
the emailed code travels over real SMTP; the call back carries the claim once; a service code
works once.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from rq import Queue, Worker

from ivr.outbox import Outbox
from ivr.processes import QUEUE
from ivr.simulator import (
    CallResult,
    Gather,
    Hangup,
    HttpTransport,
    Keys,
    Say,
    parse_twiml,
)
from ivr.simulator.phone import Phone
from ivr.simulator.player import CallerInput
from ivr.store.customers import Customer
from ivr.store.server import find_free_port
from tests.support import (
    DeliverTwice,
    TimedTransport,
    assert_well_served,
    authentications,
    contains_code,
    deliveries,
    make_player,
    never_enqueued,
    redis_contents,
    seed_customer,
)

ACCOUNT = "12345678"
PHONE = "+14155550100"  # the number on file
EMAIL = "alice@example.com"  # the address on file
OTHER_NUMBER = "+14155550123"  # where the caller happens to call from: not on file
IVR_NUMBER = "+15005550001"
PIN = "583920"
EMAIL_FROM = "ivr@example.com"

CARD_SERVICES = "card-services"
PIN_TO_CARD_CHECK = (Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{PIN}#"), Keys("2"))
STEPS_TO_CARD_CHECK = ["identify", "choose_method", "pin", "main_menu", "card_check"]

SMS_HOLD = "Please hold while we text a code to the phone number on file"
EMAIL_HOLD = "Please hold while we email a code to the address on file"
SMS_UNAVAILABLE = "Sorry, we cannot send a text message to the phone number on file."
CARD_CHECK_PROMPT = "Card changes need one more check."
CALL_BACK_PROMPT = "We will call you back at the phone number on file in a moment."
CALLBACK_GREETING = "Hello, this is Example Bank returning your call about your card."
CODE_FAILURE = "That code did not match. You have 1 attempt left."
APOLOGY = "We are sorry, we cannot take your call right now"

SMS_MAX_WAIT = 12.0  # flows/default.yaml: sms_code has no max_wait, so the schema's 12 s
OTP = re.compile(r"(?<![0-9])[0-9]{6}(?![0-9])")
CALL_SID = re.compile(r"CA[0-9a-f]{32}")


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def customer(redis_url: str, pin_hash: str) -> Customer:
    """Account 12345678: phone +14155550100, email alice@example.com, PIN 583920."""
    return seed_customer(
        redis_url, Customer(account=ACCOUNT, phone=PHONE, email=EMAIL, pin_hash=pin_hash)
    )


@pytest.fixture
def possession_env(outbox_path: Path) -> dict[str, str]:
    """The settings web and worker must agree on (IVR_CODE_KEY comes from service_env): the
    test's outbox (`outbox_path`) is the customer's phone and mailbox, shared by both."""
    return {"IVR_OUTBOX": str(outbox_path)}


@pytest.fixture
def web(web_factory, possession_env):
    return web_factory(possession_env)


@pytest.fixture
def worker(worker_factory, possession_env):
    return worker_factory(possession_env)


@dataclass
class SmtpCollector:
    """An aiosmtpd handler keeping every message it accepted."""

    def __post_init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(  # aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        parsed = []
        for envelope in self.envelopes:
            content = envelope.original_content or envelope.content
            assert isinstance(content, bytes)
            message = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            parsed.append(message)
        return parsed


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, SmtpCollector]]:
    """A real SMTP server on a free loopback port."""
    collector = SmtpCollector()
    controller = Controller(collector, hostname="127.0.0.1", port=find_free_port())
    controller.start()
    try:
        yield controller, collector
    finally:
        controller.stop()


# --------------------------------------------------------------------------------------------
# The caller, the wire, and what rests in Redis
# --------------------------------------------------------------------------------------------

Answer = CallerInput | None | Callable[[Gather], CallerInput | None]


class Caller:
    """Answers each <Gather> with the next scripted answer, which may be worked out at the prompt
    (a code read off the phone); silent once the script is spent, so the IVR ends the call its
    own way.  `asked` names the step of every question, in order."""

    def __init__(self, *answers: Answer) -> None:
        self._answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, gather: Gather, heard_so_far: list[str]) -> CallerInput | None:
        assert gather.action is not None
        self.asked.append(urlsplit(gather.action).path.rsplit("/", 1)[-1])
        if not self._answers:
            return None
        answer = self._answers.pop(0)
        return answer(gather) if callable(answer) else answer


def assert_code_rests_nowhere(
    code: str, dumps: list[bytes], result: CallResult, *procs: object
) -> None:
    """SECURITY 11: the plaintext code lives only in the job that delivers it."""
    for dump in dumps:
        assert b"rq:job:" in dump or b"ivr:" in dump  # a real dump, not an empty string
        assert not contains_code(dump, code), "the code is stored in Redis"
    urls = " ".join(event.url for event in result.events)
    assert not contains_code(urls, code), "the code is in a webhook URL"
    for proc in procs:
        log = proc.log()  # type: ignore[attr-defined]
        assert log, f"{proc} wrote no log at all"
        assert not contains_code(log, code), f"the code is in the log of {proc}"


def read_code(phone: Phone, seen: list[str], snapshot: Callable[[], None]) -> Answer:
    """At the code prompt: the code in the newest text or email on the phone, keyed in."""

    def answer(gather: Gather) -> CallerInput:
        code = phone.latest_code()
        assert code is not None, f"no code on the phone when asked for it: {phone.outbox.path}"
        seen.append(code)
        snapshot()
        return Keys(f"{code}#")

    return answer


def reply_with(result: CallResult, text: str) -> str:
    """The first webhook answer in which the caller heard `text`."""
    for event in result.events:
        if event.kind != "status" and text in event.body:
            return event.body
    raise AssertionError(f"nobody said {text!r}\n{result.transcript()}")


# --------------------------------------------------------------------------------------------
# A texted code: to the phone on file, keyed in, card services; in clear nowhere at rest
# --------------------------------------------------------------------------------------------


class TestSmsCode:
    def test_code_texted_to_the_phone_on_file_reaches_card_services(
        self, web, worker, auth_token, customer, rdb, outbox_path
    ) -> None:
        phone = Phone(Outbox(outbox_path))
        seen: list[str] = []
        dumps: list[bytes] = []
        caller = Caller(
            *PIN_TO_CARD_CHECK,
            Keys("1"),
            read_code(phone, seen, lambda: dumps.append(redis_contents(rdb))),
        )
        transport = TimedTransport(HttpTransport())
        call = make_player(web.base_url, auth_token, transport, from_number=OTHER_NUMBER)

        result = call.play(caller)

        assert_well_served(result)
        assert result.outcome == "enqueued", result.transcript()
        assert result.queue == CARD_SERVICES
        assert caller.asked == [*STEPS_TO_CARD_CHECK, "sms_code"]
        assert result.said(SMS_HOLD)
        assert authentications(rdb, call.call_sid) == [("pin", "success"), ("sms_otp", "success")]
        transport.assert_prompt()

        # SECURITY 13: to the number on file, not to the number that called.
        (sms,) = Outbox(outbox_path).messages()
        assert sms.channel == "sms"
        assert sms.to == PHONE != OTHER_NUMBER
        # SECURITY 8: six digits, and the caller keyed exactly those.
        codes = OTP.findall(sms.body)
        assert len(codes) == 1, sms.body
        (code,) = codes
        assert seen == [code]
        assert ("sms_otp", "sent") in deliveries(rdb, call.call_sid)

        # SECURITY 11: no plaintext in Redis (at the prompt and after), URLs or process logs.
        dumps.append(redis_contents(rdb))
        assert_code_rests_nowhere(code, dumps, result, web, worker)


# --------------------------------------------------------------------------------------------
# Twilio retries: the same signed request twice sends one code
# --------------------------------------------------------------------------------------------


class TestRetriedWebhook:
    def test_choosing_sms_twice_queues_one_job_and_sends_one_text(
        self, web, worker_factory, possession_env, auth_token, customer, rdb, outbox_path
    ) -> None:
        """The worker starts only after both copies arrived, so the queue shows what they
        enqueued; then it delivers, and the caller finishes the call."""
        queue = Queue(QUEUE, connection=rdb)
        queued: list[list[str]] = []
        workers = []

        def count_then_start_worker() -> None:
            queued.append(queue.get_job_ids())
            workers.append(worker_factory(possession_env))

        transport = DeliverTwice(HttpTransport(), "/voice/step/card_check", count_then_start_worker)
        timed = TimedTransport(transport)
        phone = Phone(Outbox(outbox_path))
        seen: list[str] = []
        call = make_player(web.base_url, auth_token, timed)

        result = call.play(
            Caller(*PIN_TO_CARD_CHECK, Keys("1"), read_code(phone, seen, lambda: None))
        )

        first, retry = transport.replies
        assert first.status == retry.status == 200
        assert retry.body == first.body  # the stored answer, not a second run of the step
        assert SMS_HOLD in first.body
        assert len(queued[0]) == 1, queued
        assert queued[0][0].startswith(f"code-{call.call_sid}-sms_otp-")

        assert_well_served(result)
        assert result.outcome == "enqueued", result.transcript()
        assert result.queue == CARD_SERVICES
        timed.assert_prompt()

        messages = Outbox(outbox_path).messages()
        assert [(m.channel, m.to) for m in messages] == [("sms", PHONE)]
        (worker,) = workers
        (registered,) = [w for w in Worker.all(connection=rdb) if w.name == worker.name]
        assert registered.successful_job_count == 1
        assert registered.failed_job_count == 0
        assert queue.count == 0
        assert deliveries(rdb, call.call_sid) == [
            ("sms_otp", "send_requested"),
            ("sms_otp", "sent"),
        ]
        # One send counted against each cap (SECURITY 14), not two.
        assert int(rdb.get(f"ivr:sends:account:{ACCOUNT}") or 0) == 1
        assert int(rdb.get(f"ivr:sends:destination:{PHONE}") or 0) == 1


# --------------------------------------------------------------------------------------------
# Worker down: the caller hears it within the hold and chooses again (SECURITY 26)
# --------------------------------------------------------------------------------------------


class TestWorkerDown:
    def test_no_worker_means_unavailable_within_max_wait(
        self, web, auth_token, customer, rdb, outbox_path
    ) -> None:
        transport = TimedTransport(HttpTransport())
        caller = Caller(*PIN_TO_CARD_CHECK, Keys("1"))
        call = make_player(web.base_url, auth_token, transport)

        started = time.monotonic()
        result = call.play(caller)
        wall = time.monotonic() - started

        assert_well_served(result)
        assert never_enqueued(result), result.transcript()
        assert result.said(SMS_HOLD)
        assert result.said(SMS_UNAVAILABLE)

        # Back at the card check menu, straight after the apology for the text.
        (say, gather, *_rest) = parse_twiml(reply_with(result, SMS_UNAVAILABLE))
        assert say == Say(SMS_UNAVAILABLE)
        assert isinstance(gather, Gather)
        assert gather.action is not None and gather.action.startswith("/voice/step/card_check?")
        assert any(isinstance(c, Say) and CARD_CHECK_PROMPT in c.text for c in gather.children)
        assert caller.asked[:6] == [*STEPS_TO_CARD_CHECK, "card_check"]

        # Held about max_wait, really (the pauses were played), and not much longer.
        (chose,) = [s for s in transport.sent if s.path == "/voice/step/card_check"][:1]
        (told,) = [s for s in transport.sent if SMS_UNAVAILABLE in s.reply.body]
        held = told.done - chose.done
        assert SMS_MAX_WAIT - 1 <= held <= SMS_MAX_WAIT + 3, held
        assert wall < SMS_MAX_WAIT + 8, wall
        # Every single webhook answered far inside Twilio's 15 s, hold or no hold.
        transport.assert_prompt()

        # Nothing delivered, no possession proof; the job just waits for a worker.
        assert Outbox(outbox_path).messages() == []
        assert ("sms_otp", "success") not in authentications(rdb, call.call_sid)
        assert ("sms_otp", "sent") not in deliveries(rdb, call.call_sid)
        (job_id,) = Queue(QUEUE, connection=rdb).get_job_ids()
        assert job_id.startswith(f"code-{call.call_sid}-sms_otp-")
        # The waiting job's arguments, decoded from its pickle, name the call and the send
        # (its nonce is the request's sequence number): not a code, not the account.
        nonce = job_id.rsplit("-", 1)[1]
        decoded_args = f"args=({call.call_sid!r}, 'sms_otp', {nonce!r})"
        assert decoded_args.encode() in redis_contents(rdb)


# --------------------------------------------------------------------------------------------
# An emailed code over a real SMTP server
# --------------------------------------------------------------------------------------------


class TestEmailCode:
    def test_code_emailed_over_smtp_reaches_card_services(
        self, web_factory, worker_factory, possession_env, smtp_server, auth_token, customer, rdb,
        outbox_path,
    ) -> None:  # fmt: skip
        controller, collector = smtp_server
        env = {
            **possession_env,
            # flows/default.yaml takes no email code for a card change (NIST SP 800-63B rev 4)
            "IVR_FLOWS_DIR": str(Path(__file__).resolve().parents[1] / "flows"),
            "IVR_FLOW": "email",
            "IVR_EMAIL_BACKEND": "smtp",
            "IVR_SMTP_URL": f"smtp://127.0.0.1:{controller.port}",
            "IVR_EMAIL_FROM": EMAIL_FROM,
        }
        web = web_factory(env)
        worker = worker_factory(env)
        seen: list[str] = []
        dumps: list[bytes] = []

        def code_from_mailbox(gather: Gather) -> CallerInput:
            messages = collector.messages()
            assert len(messages) == 1, f"{len(messages)} emails arrived"
            found = OTP.findall(messages[0].get_content())
            assert len(found) == 1, messages[0].get_content()
            seen.append(found[0])
            dumps.append(redis_contents(rdb))
            return Keys(f"{found[0]}#")

        transport = TimedTransport(HttpTransport())
        call = make_player(web.base_url, auth_token, transport, from_number=OTHER_NUMBER)
        caller = Caller(*PIN_TO_CARD_CHECK, Keys("2"), code_from_mailbox)

        result = call.play(caller)

        assert_well_served(result)
        assert result.outcome == "enqueued", result.transcript()
        assert result.queue == CARD_SERVICES
        assert caller.asked == [*STEPS_TO_CARD_CHECK, "email_code"]
        assert result.said(EMAIL_HOLD)
        assert authentications(rdb, call.call_sid) == [("pin", "success"), ("email_otp", "success")]
        transport.assert_prompt()

        (envelope,) = collector.envelopes
        assert envelope.mail_from == EMAIL_FROM
        assert envelope.rcpt_tos == [EMAIL]
        (message,) = collector.messages()
        assert message["From"] == EMAIL_FROM
        assert message["To"] == EMAIL
        assert message["Subject"] == "Example Bank verification code"
        (code,) = seen
        assert code not in message["Subject"]
        assert Outbox(outbox_path).messages() == []  # SMTP, not the development outbox

        dumps.append(redis_contents(rdb))
        assert_code_rests_nowhere(code, dumps, result, web, worker)


# --------------------------------------------------------------------------------------------
# The call back: to the number on file, carrying the claim once
# --------------------------------------------------------------------------------------------


class TestCallback:
    def test_call_back_to_the_phone_on_file_reaches_card_services_once(
        self, web, worker, auth_token, customer, rdb, outbox_path
    ) -> None:
        phone = Phone(Outbox(outbox_path))
        transport = TimedTransport(HttpTransport())
        first = make_player(web.base_url, auth_token, transport, from_number=OTHER_NUMBER)
        asking = Caller(*PIN_TO_CARD_CHECK, Keys("3"))

        asked = first.play(asking)

        assert_well_served(asked)
        assert asked.outcome == "hung_up", asked.transcript()
        assert never_enqueued(asked)
        assert asking.asked == STEPS_TO_CARD_CHECK
        assert asked.heard[-1].startswith(CALL_BACK_PROMPT)
        assert parse_twiml(reply_with(asked, CALL_BACK_PROMPT))[-1] == Hangup()

        ringing = phone.wait_for_call(timeout=10)
        assert ringing is not None, f"the worker placed no call\n{worker.log_tail()}"
        assert ringing.to == PHONE != OTHER_NUMBER  # SECURITY 13
        assert ringing.call_sid is not None and CALL_SID.fullmatch(ringing.call_sid)
        assert ("callback", "sent") in deliveries(rdb, first.call_sid)

        def answer(call_sid: str) -> tuple[CallResult, Caller]:
            callee = Caller(Keys("1"))
            call = make_player(
                web.base_url, auth_token, transport,
                from_number=IVR_NUMBER, to_number=PHONE, call_sid=call_sid,
                voice_path="/voice/callback", extra_params={"Direction": "outbound-api"},
            )  # fmt: skip
            return call.play(callee), callee

        answered, callee = answer(ringing.call_sid)

        assert_well_served(answered)
        assert answered.outcome == "enqueued", answered.transcript()
        assert answered.queue == CARD_SERVICES
        assert answered.said(CALLBACK_GREETING)
        assert callee.asked == ["call_back"]
        assert authentications(rdb, ringing.call_sid) == [("callback", "success")]

        # Answering the same call back again (a replay): no greeting, no queue.
        again, callee_again = answer(ringing.call_sid)

        assert_well_served(again)
        assert again.outcome == "hung_up", again.transcript()
        assert never_enqueued(again)
        assert not again.said(CALLBACK_GREETING)
        assert callee_again.asked == []
        assert authentications(rdb, ringing.call_sid) == [("callback", "success")]

        # Even once the call back's own session is gone (its TTL), the claim it carried was
        # taken on the first answer: nothing is left to resume.
        rdb.delete(f"ivr:call:{ringing.call_sid}")
        late, callee_late = answer(ringing.call_sid)

        assert_well_served(late)
        assert late.outcome == "hung_up", late.transcript()
        assert never_enqueued(late)
        assert late.said(APOLOGY)
        assert callee_late.asked == []
        assert authentications(rdb, ringing.call_sid) == [("callback", "success")]
        assert [m.channel for m in Outbox(outbox_path).messages()] == ["call"]
        transport.assert_prompt()

    def test_a_call_back_nobody_placed_gets_the_apology(self, web, auth_token, customer) -> None:
        transport = TimedTransport(HttpTransport())
        call = make_player(
            web.base_url, auth_token, transport,
            from_number=IVR_NUMBER, to_number=PHONE,
            voice_path="/voice/callback", extra_params={"Direction": "outbound-api"},
        )  # fmt: skip
        result = call.play(Caller(Keys("1")))

        assert_well_served(result)
        assert result.outcome == "hung_up"
        assert never_enqueued(result)
        assert result.said(APOLOGY)


# --------------------------------------------------------------------------------------------
# A service code from the website: asked over the API, works once
# --------------------------------------------------------------------------------------------


class TestServiceCode:
    def test_service_code_reaches_card_services_once(
        self, web, auth_token, api_token, customer, rdb
    ) -> None:
        reply = requests.post(
            f"{web.base_url}/api/service-codes",
            json={"account": ACCOUNT},
            headers={"Authorization": f"Bearer {api_token}"},
            timeout=10,
        )
        assert reply.status_code == 201, reply.text
        assert reply.headers["Cache-Control"] == "no-store"
        code = reply.json()["code"]
        assert re.fullmatch(r"[0-9]{8}", code), code

        def call_with_code() -> tuple[CallResult, Caller, str]:
            transport = TimedTransport(HttpTransport())
            call = make_player(web.base_url, auth_token, transport)
            caller = Caller(*PIN_TO_CARD_CHECK, Keys("4"), Keys(f"{code}#"))
            result = call.play(caller)
            assert_well_served(result)
            transport.assert_prompt()
            return result, caller, call.call_sid

        used, caller, sid = call_with_code()

        assert used.outcome == "enqueued", used.transcript()
        assert used.queue == CARD_SERVICES
        assert caller.asked == [*STEPS_TO_CARD_CHECK, "service_code"]
        assert authentications(rdb, sid) == [("pin", "success"), ("service_code", "success")]

        reused, caller, sid = call_with_code()

        assert never_enqueued(reused), reused.transcript()
        assert reused.said(CODE_FAILURE)
        assert caller.asked[:7] == [*STEPS_TO_CARD_CHECK, "service_code", "card_check"]
        assert authentications(rdb, sid) == [("pin", "success"), ("service_code", "failure")]

        # Stored only as a keyed digest, and never logged by the web process.
        assert_code_rests_nowhere(code, [redis_contents(rdb)], used, web)
        assert not contains_code(" ".join(e.url for e in reused.events), code)
