"""Whole calls that step up with something the caller has: SMS and email codes, service codes,
the call back. Played by the simulator in-process against the default flow on fakeredis.

The worker is deterministic: the player never really pauses (`pause_scale=0`), and each time
the caller is put on hold (a `<Pause>`) the observer runs the queued jobs with rq's SimpleWorker,
as a worker would while the caller waits. The caller reads codes off their phone (the outbox,
through `ivr.simulator.phone.Phone`). SECURITY.md 9-14, 26.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue

from ivr.flows.engine import Ask, CallerInput, CallState, Hangup
from ivr.outbox import Outbox, OutboxMessage
from ivr.processes import QUEUE
from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, CallResult, Gather, Keys, Speech, parse_twiml
from ivr.simulator import Enqueue as EnqueueVerb
from ivr.simulator import Hangup as HangupVerb
from ivr.simulator.phone import Phone
from ivr.store import keys
from ivr.store.sessions import SessionStore
from tests.conftest import (
    ALICE,
    API_TOKEN,
    BASE_URL,
    BOB,
    TOKEN,
    DemoCustomer,
    PlayerFactory,
    run_jobs,
)
from tests.support import (
    assert_never_enqueued,
    assert_not_in_redis,
    redis_snapshot,
    sign,
)

HOLD_SMS = "Please hold while we text a code to the phone number on file."
HOLD_EMAIL = "Please hold while we email a code to the address on file."
ENTER_SMS = "Please enter the code we sent you"
CODE_WRONG = "That code did not match. You have 1 attempt left."
PIN_WRONG = "That did not match our records. You have 1 attempt left."
NO_SMS = "Sorry, we cannot send a text message right now."
NO_EMAIL = "Sorry, we cannot send an email right now."
CARD_CHECK = "Card changes need one more check."
CARD_SERVICES = "Connecting you to our card services team."
CALLING_BACK = "We will call you back at the phone number on file in a moment."
CALLBACK_HELLO = "Hello, this is Example Bank returning your call about your card."
OTHER_ROUTE = "We could not verify your identity on this call"
APOLOGY = "We are sorry, we cannot take your call right now"
WRONG_PIN = "999999"
OUR_NUMBER = "+15005550001"

Answer = Keys | Speech | None | Callable[[], Keys | None]


# -- the caller's side -----------------------------------------------------------------------


def step_of(gather: Gather) -> str:
    """The step a question belongs to: its action is /voice/step/<step>?seq=N."""
    return urlsplit(gather.action or "").path.rsplit("/", 1)[-1]


class Turns:
    """The caller's answers, in order, each with the step it must be asked at.

    An `InputSource` for `CallPlayer.play`: a question at an unexpected step, or one question
    too many, fails the test with what the caller last heard.
    """

    def __init__(self, *turns: tuple[str, Answer]) -> None:
        self.turns = list(turns)
        self.next = 0

    def __call__(self, gather: Gather, heard: list[str]) -> Keys | Speech | None:
        step = step_of(gather)
        last = heard[-1] if heard else "(nothing)"
        assert self.next < len(self.turns), f"unscripted question at {step!r}; heard {last!r}"
        expected, answer = self.turns[self.next]
        assert step == expected, f"asked at {step!r}, expected {expected!r}; heard {last!r}"
        self.next += 1
        return answer() if callable(answer) else answer

    @property
    def done(self) -> bool:
        return self.next == len(self.turns)


class Handset:
    """The customer's phone and mailbox: codes are read off it when the IVR asks for them."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = Outbox(outbox)
        self.phone = Phone(self.outbox)
        self.used: list[str] = []

    def latest(self) -> str:
        code = self.phone.latest_code()
        assert code is not None, "no code has arrived"
        return code

    def key_in_latest(self) -> Keys:
        """(an Answer) Key in the newest code received, then pound."""
        self.used.append(self.latest())
        return Keys(self.used[-1] + "#")

    def key_in_wrong(self) -> Keys:
        """(an Answer) Key in a code that is not the newest one."""
        right = self.latest()
        self.used.append(f"{(int(right) + 1) % 10 ** len(right):0{len(right)}d}")
        return Keys(self.used[-1] + "#")

    def key_in_earlier(self) -> Keys:
        """(an Answer) Key in the code received before the newest one."""
        codes = self.codes()
        assert len(codes) >= 2, codes
        self.used.append(codes[-2])
        return Keys(codes[-2] + "#")

    def messages(self, channel: str | None = None) -> list[OutboxMessage]:
        return [m for m in self.outbox.messages() if channel is None or m.channel == channel]

    def codes(self) -> list[str]:
        found = []
        for message in self.messages():
            if message.channel in ("sms", "email"):
                match = re.search(r"(?<![0-9])([0-9]{6,10})(?![0-9])", message.body)
                assert match, message.body
                found.append(match.group(1))
        return found


def up_to_card_check(
    pin: str = ALICE.pin, account: str = ALICE.account
) -> list[tuple[str, Answer]]:
    """Identify, choose the PIN, key it in, then ask about a card ("2")."""
    return [
        ("identify", Keys(account + "#")),
        ("choose_method", Keys("1")),
        ("pin", Keys(pin + "#")),
        ("main_menu", Keys("2")),
    ]


def silent(step: str, times: int = 3) -> list[tuple[str, Answer]]:
    """Say nothing until the menu gives up (goodbye)."""
    return [(step, None)] * times


def polls(result: CallResult) -> int:
    return sum("/voice/poll/" in e.url for e in result.events if e.kind != "status")


def held_seconds(result: CallResult) -> int:
    return sum(int(line.split()[-1].rstrip("s")) for kind, line in result.log if kind == "pause")


def pauses(result: CallResult) -> int:
    return sum(kind == "pause" for kind, _ in result.log)


def assert_card_services(result: CallResult) -> None:
    assert result.outcome == "enqueued", result.transcript(requests=True)
    assert result.queue == "card-services"
    assert result.heard[-1] == CARD_SERVICES


def heard_in_order(result: CallResult, *texts: str) -> bool:
    """Whether the caller heard each text (as a substring), in this order."""
    position = 0
    for text in texts:
        while position < len(result.heard) and text not in result.heard[position]:
            position += 1
        if position == len(result.heard):
            return False
        position += 1
    return True


def code_nowhere_but_digits(result: CallResult, code: str) -> None:
    """The code travels once, as the caller's Digits: never in a URL or in TwiML."""
    for event in result.events:
        assert code not in event.url
        assert code not in event.body
    typed = [e for e in result.events if e.params.get("Digits") == code]
    assert len(typed) == 1


def auth_outcomes(rt: Runtime, method: str) -> list[str]:
    return [
        e["outcome"]
        for e in reversed(rt.audit.recent(1000))
        if e["event"] == "authenticate" and e["method"] == method
    ]


def issue_service_code(client: FlaskClient, account: str = ALICE.account) -> str:
    response = client.post(
        "/api/service-codes",
        json={"account": account},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["code"])


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def handset(worker_env: Path) -> Handset:
    return Handset(worker_env)


@pytest.fixture
def caller(
    player: PlayerFactory,
    runtime: Runtime,
    customers: dict[str, DemoCustomer],
    worker_env: Path,
) -> Callable[..., CallPlayer]:
    """A simulated caller (Alice's phone by default) whose holds let the worker run.

    `caller(worker=False)`: no worker ever runs; `caller(on_pause=f)`: `f()` runs at each hold
    before the worker does.
    """

    def make(
        from_number: str = ALICE.phone,
        *,
        worker: bool = True,
        on_pause: Callable[[], None] | None = None,
        **options: Any,
    ) -> CallPlayer:
        def observer(kind: str, line: str) -> None:
            if kind != "pause":
                return
            if on_pause is not None:
                on_pause()
            if worker:
                run_jobs(runtime.redis)

        return player(from_number, pause_scale=0, observer=observer, **options)

    return make


def queued_jobs(redis: Any) -> int:
    return Queue(QUEUE, connection=redis).count


# -- SMS codes -------------------------------------------------------------------------------


class TestSmsCode:
    def test_code_reaches_card_services(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_latest),
        )
        result = caller().play(turns)
        assert turns.done
        assert_card_services(result)
        assert heard_in_order(result, CARD_CHECK, HOLD_SMS, ENTER_SMS, CARD_SERVICES)
        assert polls(result) == 1  # the worker delivered during the first hold
        [sms] = handset.messages()
        assert (sms.channel, sms.to) == ("sms", ALICE.phone)
        [code] = handset.used
        code_nowhere_but_digits(result, code)
        assert_not_in_redis(runtime.redis, code)
        assert auth_outcomes(runtime, "sms_otp") == ["success"]

    def test_called_from_another_phone_the_code_goes_to_the_phone_on_file(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_latest),
        )
        result = caller(BOB.phone).play(turns)
        assert_card_services(result)
        assert [m.to for m in handset.messages()] == [ALICE.phone]

    def test_spoken_menu_choice_works_too(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Speech("text message")),
            ("sms_code", handset.key_in_latest),
        )
        assert_card_services(caller().play(turns))

    def test_a_wrong_code_counts_one_failure(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_wrong),
            ("card_check", Keys("1")),  # a new code, the failure still counted
            ("sms_code", handset.key_in_latest),
        )
        result = caller().play(turns)
        assert turns.done
        assert heard_in_order(result, HOLD_SMS, CODE_WRONG, CARD_CHECK, HOLD_SMS, CARD_SERVICES)
        assert_card_services(result)
        assert len(handset.messages("sms")) == 2
        assert auth_outcomes(runtime, "sms_otp") == ["failure", "success"]

    def test_pin_and_code_failures_share_the_budget(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = Turns(
            ("identify", Keys(ALICE.account + "#")),
            ("choose_method", Keys("1")),
            ("pin", Keys(WRONG_PIN + "#")),
            ("choose_method", Keys("1")),
            ("pin", Keys(ALICE.pin + "#")),
            ("main_menu", Keys("2")),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_wrong),
        )
        result = caller().play(turns)
        assert turns.done
        assert heard_in_order(result, PIN_WRONG, HOLD_SMS, OTHER_ROUTE)
        assert CODE_WRONG not in result.heard
        assert result.outcome == "hung_up"
        assert_never_enqueued(result)

    def test_a_code_from_one_call_fails_in_another(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        first = Turns(*up_to_card_check(), ("card_check", Keys("1")), *silent("sms_code"))
        result = caller().play(first)
        assert first.done
        assert_never_enqueued(result)
        second = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_earlier),  # the first call's code
            *silent("card_check"),
        )
        result = caller().play(second)
        assert second.done
        codes = handset.codes()
        assert len(codes) == 2
        if codes[0] == codes[1]:  # one chance in a million
            pytest.skip("both calls happened to draw the same code")
        assert heard_in_order(result, HOLD_SMS, CODE_WRONG, CARD_CHECK)
        assert_never_enqueued(result)
        assert auth_outcomes(runtime, "sms_otp") == ["failure"]

    def test_silence_at_the_code_prompt_sends_no_new_code(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", None),
            ("sms_code", handset.key_in_latest),
        )
        result = caller().play(turns)
        assert turns.done
        assert_card_services(result)
        assert len(handset.messages()) == 1
        assert sum(HOLD_SMS in text for text in result.heard) == 1
        assert auth_outcomes(runtime, "sms_otp") == ["success"]

    def test_a_second_wrong_code_ends_authentication(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_wrong),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_wrong),
        )
        result = caller().play(turns)
        assert turns.done
        assert result.heard[-1].startswith(OTHER_ROUTE)
        assert_never_enqueued(result)


class TestResend:
    def test_resend_sends_a_new_code_that_works(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", Keys("*#")),
            ("sms_code", handset.key_in_latest),
        )
        result = caller().play(turns)
        assert turns.done
        assert_card_services(result)
        assert heard_in_order(result, HOLD_SMS, ENTER_SMS, HOLD_SMS, ENTER_SMS, CARD_SERVICES)
        assert len(handset.messages("sms")) == 2
        assert polls(result) == 2

    def test_the_code_before_a_resend_no_longer_works(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", Keys("*#")),
            ("sms_code", handset.key_in_earlier),
            *silent("card_check"),
        )
        result = caller().play(turns)
        assert turns.done
        first, second = handset.codes()
        if first == second:  # one chance in a million
            pytest.skip("the resend happened to draw the same code")
        assert heard_in_order(result, HOLD_SMS, HOLD_SMS, CODE_WRONG, CARD_CHECK)
        assert_never_enqueued(result)
        assert auth_outcomes(runtime, "sms_otp") == ["failure"]

    def test_a_resend_keeps_the_failure_count(
        self, caller: Callable[..., CallPlayer], handset: Handset
    ) -> None:
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_wrong),  # failure 1
            ("card_check", Keys("1")),
            ("sms_code", Keys("*#")),  # resend
            ("sms_code", handset.key_in_wrong),  # failure 2: the budget is spent
        )
        result = caller().play(turns)
        assert turns.done
        assert heard_in_order(result, CODE_WRONG, HOLD_SMS, HOLD_SMS, OTHER_ROUTE)
        assert len(handset.messages("sms")) == 3
        assert_never_enqueued(result)

    def test_resends_are_capped(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        limit = min(runtime.settings.send_limit_account, runtime.settings.code_requests_per_call)
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            *[("sms_code", Keys("*#"))] * limit,  # the last of these is one send too many
            *silent("card_check"),
        )
        result = caller().play(turns)
        assert turns.done
        assert len(handset.messages("sms")) == limit
        assert sum(HOLD_SMS in text for text in result.heard) == limit
        assert heard_in_order(result, *[HOLD_SMS] * limit, NO_SMS, CARD_CHECK)
        assert_never_enqueued(result)


# -- other possession methods ----------------------------------------------------------------


class TestEmailCode:
    def test_code_reaches_card_services(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("2")),
            ("email_code", handset.key_in_latest),
        )
        result = caller().play(turns)
        assert turns.done
        assert_card_services(result)
        assert heard_in_order(result, HOLD_EMAIL, "Please enter the code we emailed you")
        [email] = handset.messages()
        assert (email.channel, email.to) == ("email", ALICE.email)
        code_nowhere_but_digits(result, handset.used[0])
        assert auth_outcomes(runtime, "email_otp") == ["success"]


class TestServiceCode:
    def test_code_from_the_api_reaches_card_services(
        self, caller: Callable[..., CallPlayer], client: FlaskClient, runtime: Runtime
    ) -> None:
        code = issue_service_code(client)
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("4")),
            ("service_code", Keys(code + "#")),
        )
        result = caller().play(turns)
        assert turns.done
        assert_card_services(result)
        assert pauses(result) == 0  # nothing to deliver, nobody holds
        code_nowhere_but_digits(result, code)
        assert auth_outcomes(runtime, "service_code") == ["success"]

    def test_a_service_code_works_once(
        self, caller: Callable[..., CallPlayer], client: FlaskClient
    ) -> None:
        code = issue_service_code(client)
        steps = (*up_to_card_check(), ("card_check", Keys("4")), ("service_code", Keys(code + "#")))
        assert_card_services(caller().play(Turns(*steps)))
        again = Turns(*steps, *silent("card_check"))
        result = caller().play(again)
        assert again.done
        assert heard_in_order(result, CODE_WRONG, CARD_CHECK)
        assert_never_enqueued(result)

    def test_another_accounts_service_code_fails(
        self, caller: Callable[..., CallPlayer], client: FlaskClient
    ) -> None:
        bobs = issue_service_code(client, BOB.account)
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("4")),
            ("service_code", Keys(bobs + "#")),
            *silent("card_check"),
        )
        result = caller().play(turns)
        assert CODE_WRONG in result.heard
        assert_never_enqueued(result)


# -- when delivery cannot happen -------------------------------------------------------------


class TestDeliveryUnavailable:
    @pytest.mark.parametrize(
        ("choice", "step", "hold", "sorry", "max_wait"),
        [("1", "sms_code", HOLD_SMS, NO_SMS, 12), ("2", "email_code", HOLD_EMAIL, NO_EMAIL, 16)],
        ids=["sms", "email"],
    )
    def test_no_worker_the_caller_is_offered_another_method(
        self,
        caller: Callable[..., CallPlayer],
        handset: Handset,
        runtime: Runtime,
        choice: str,
        step: str,
        hold: str,
        sorry: str,
        max_wait: int,
    ) -> None:
        assert runtime.flow.steps[step].max_wait == max_wait  # type: ignore[union-attr]
        turns = Turns(*up_to_card_check(), ("card_check", Keys(choice)), *silent("card_check"))
        result = caller(worker=False).play(turns)
        assert turns.done
        assert heard_in_order(result, hold, sorry, CARD_CHECK)
        assert held_seconds(result) == max_wait  # 1 s first, then 2 s at a time, never longer
        assert polls(result) == max_wait // 2 + 1
        assert handset.messages() == []
        assert queued_jobs(runtime.redis) == 1  # still waiting for a worker
        assert_never_enqueued(result)

    def test_provider_failure_offers_another_method_at_once(
        self,
        caller: Callable[..., CallPlayer],
        handset: Handset,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("IVR_SMS_BACKEND", "twilio")  # and no IVR_SMS_FROM: fails for good
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("card_check", Keys("2")),  # the email works
            ("email_code", handset.key_in_latest),
        )
        result = caller().play(turns)
        assert turns.done
        assert heard_in_order(result, HOLD_SMS, NO_SMS, CARD_CHECK, HOLD_EMAIL, CARD_SERVICES)
        assert [m.channel for m in handset.messages()] == ["email"]
        assert_card_services(result)

    def test_send_cap_reached_is_unavailable_at_once(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        limit = runtime.settings.send_limit_account
        runtime.redis.set(keys.sends("account", ALICE.account), limit, ex=600)
        turns = Turns(*up_to_card_check(), ("card_check", Keys("1")), *silent("card_check"))
        result = caller().play(turns)
        assert turns.done
        assert HOLD_SMS not in result.heard
        assert pauses(result) == 0 and polls(result) == 0
        assert heard_in_order(result, CARD_CHECK, NO_SMS, CARD_CHECK)
        assert handset.messages() == []
        assert queued_jobs(runtime.redis) == 0
        assert_never_enqueued(result)


# -- the call back ---------------------------------------------------------------------------


def answer_call_back(
    caller: Callable[..., CallPlayer], ring: OutboxMessage, *answers: tuple[str, Answer]
) -> tuple[CallResult, Turns]:
    """Pick up the call the worker placed: Twilio requests /voice/callback with its CallSid."""
    turns = Turns(*answers)
    player = caller(
        OUR_NUMBER,
        to_number=ring.to,
        call_sid=ring.call_sid,
        voice_path="/voice/callback",
        extra_params={"Direction": "outbound-api"},
    )
    return player.play(turns), turns


class TestCallBack:
    def ask_for_call_back(
        self,
        caller: Callable[..., CallPlayer],
        handset: Handset,
        runtime: Runtime,
        from_number: str = ALICE.phone,
        pin_first: str | None = None,
    ) -> OutboxMessage:
        before: list[tuple[str, Answer]] = []
        if pin_first is not None:
            before = [("pin", Keys(pin_first + "#")), ("choose_method", Keys("1"))]
        turns = Turns(
            ("identify", Keys(ALICE.account + "#")),
            ("choose_method", Keys("1")),
            *before,
            ("pin", Keys(ALICE.pin + "#")),
            ("main_menu", Keys("2")),
            ("card_check", Keys("3")),
        )
        asking = caller(from_number)
        self.asking_sid = asking.call_sid
        result = asking.play(turns)
        assert turns.done
        assert result.outcome == "hung_up"
        assert result.heard[-1].startswith(CALLING_BACK)
        assert "<Hangup" in result.responses[-1]
        assert pauses(result) == 0
        assert_never_enqueued(result)
        assert handset.messages() == []  # nothing until the worker runs
        run_jobs(runtime.redis)
        [ring] = handset.messages()
        assert ring.channel == "call" and ring.call_sid is not None
        return ring

    @pytest.mark.parametrize("from_number", [ALICE.phone, BOB.phone], ids=["own", "other"])
    def test_call_back_reaches_card_services(
        self,
        caller: Callable[..., CallPlayer],
        handset: Handset,
        runtime: Runtime,
        from_number: str,
    ) -> None:
        ring = self.ask_for_call_back(caller, handset, runtime, from_number)
        assert ring.to == ALICE.phone  # the number on file, whoever called
        result, turns = answer_call_back(caller, ring, ("call_back", Keys("1")))
        assert turns.done
        assert result.heard[0].startswith(CALLBACK_HELLO)
        assert_card_services(result)
        assert auth_outcomes(runtime, "callback") == ["success"]

    def test_the_call_back_inherits_the_failures(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        ring = self.ask_for_call_back(caller, handset, runtime, pin_first=WRONG_PIN)
        assert ring.call_sid is not None
        # A stray key is asked again, not counted; pressing 1 then confirms the call back.
        result, turns = answer_call_back(
            caller, ring, ("call_back", Keys("2")), ("call_back", Keys("1"))
        )
        assert turns.done
        assert result.said("Sorry, I didn't catch that.")
        assert_card_services(result)
        stored = runtime.sessions.load(ring.call_sid)
        assert stored is not None
        assert stored.state.failures == 1  # the wrong PIN of the first call still counts
        assert stored.state.proofs == ["pin", "callback"]

    def test_unknown_call_sid_gets_the_apology(
        self, caller: Callable[..., CallPlayer], runtime: Runtime
    ) -> None:
        ring = OutboxMessage(channel="call", to=ALICE.phone, body="", call_sid="CA" + "ef" * 16)
        result, _ = answer_call_back(caller, ring)
        assert result.heard and result.heard[0].startswith(APOLOGY)
        assert result.outcome == "hung_up"
        assert_never_enqueued(result)
        assert not runtime.redis.exists(keys.call("CA" + "ef" * 16))

    def test_the_reference_is_used_once(
        self, caller: Callable[..., CallPlayer], handset: Handset, runtime: Runtime
    ) -> None:
        ring = self.ask_for_call_back(caller, handset, runtime)
        assert ring.call_sid is not None
        assert runtime.redis.exists(keys.callback(ring.call_sid))
        first, _ = answer_call_back(caller, ring, ("call_back", Keys("1")))
        assert_card_services(first)
        assert not runtime.redis.exists(keys.callback(ring.call_sid))
        # Twilio requesting /voice/callback again with that CallSid: the call it belongs to
        # has ended, so it is hung up; nothing is asked and nobody is connected.
        again, turns = answer_call_back(caller, ring)
        assert turns.done
        assert again.outcome == "hung_up"
        assert again.heard == []
        assert_never_enqueued(again)

    def test_the_asking_call_cannot_confirm_its_own_call_back(
        self,
        caller: Callable[..., CallPlayer],
        handset: Handset,
        runtime: Runtime,
        client: FlaskClient,
    ) -> None:
        """The asking call has ended: a "1" posted to it afterwards (a replay, a retry) is
        hung up on, and only the call placed to the number on file can confirm."""
        ring = self.ask_for_call_back(caller, handset, runtime)
        asking = SessionStore(runtime.redis, 3600).load(self.asking_sid)
        assert asking is not None and asking.state.ended and asking.state.step == "call_back"
        path = f"/voice/step/call_back?seq={asking.state.seq}"
        params = {
            "CallSid": self.asking_sid,
            "AccountSid": "AC" + "5e" * 16,
            "From": ALICE.phone,
            "To": OUR_NUMBER,
            "CallStatus": "in-progress",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            "Digits": "1",
        }
        response = client.post(
            path,
            data=params,
            headers=sign(TOKEN, BASE_URL + path, params),
            base_url=BASE_URL,
        )
        verbs = parse_twiml(response.get_data(as_text=True))
        assert isinstance(verbs[-1], HangupVerb)
        assert not any(isinstance(v, EnqueueVerb | Gather) for v in verbs)
        assert auth_outcomes(runtime, "callback") == []
        assert ring.call_sid is not None and runtime.redis.exists(keys.callback(ring.call_sid))


# -- status callbacks ------------------------------------------------------------------------


class TestCallBackProvesOnlyTheAccountCalledBack:
    """A call back to Bob's phone proves possession for Bob, never for an account the caller
    claims later in that call (say, by keying in Alice's number and PIN)."""

    def test_the_proof_is_refused_for_another_account(
        self, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        state = CallState(
            call_sid="CA" + "c1" * 16, caller=OUR_NUMBER, step="call_back",
            account=ALICE.account, proofs=["pin"], called_back=BOB.account,
        )  # fmt: skip
        assert not runtime.engine.ports.verify(state, "callback", "1")
        state.called_back = ALICE.account
        assert runtime.engine.ports.verify(state, "callback", "1")

    def test_reaching_the_step_for_another_account_calls_that_account_back(
        self, runtime: Runtime, handset: Handset, customers: dict[str, DemoCustomer]
    ) -> None:
        state = CallState(
            call_sid="CA" + "c2" * 16, caller=OUR_NUMBER, step="card_check",
            account=ALICE.account, proofs=["pin"], called_back=BOB.account,
        )  # fmt: skip
        actions = runtime.engine.answer(state, CallerInput(digits="3"))
        assert not any(isinstance(a, Ask) for a in actions)  # no "press 1" on Bob's phone
        assert isinstance(actions[-1], Hangup)
        assert state.ended
        run_jobs(runtime.redis)
        [ring] = handset.messages()
        assert (ring.channel, ring.to) == ("call", ALICE.phone)


class TestStatusCallbacks:
    def test_status_callbacks_change_nothing(
        self,
        caller: Callable[..., CallPlayer],
        handset: Handset,
        runtime: Runtime,
        app: Flask,
    ) -> None:
        client = app.test_client()
        seen: list[tuple[int, bool]] = []

        def status(call_sid: str, call_status: str) -> None:
            params = {
                "CallSid": call_sid,
                "AccountSid": "AC" + "5e" * 16,
                "From": ALICE.phone,
                "To": OUR_NUMBER,
                "CallStatus": call_status,
                "Direction": "inbound",
                "ApiVersion": "2010-04-01",
            }
            url = BASE_URL + "/voice/status"
            before = _without_over(redis_snapshot(runtime.redis))
            response = client.post(
                "/voice/status",
                data=params,
                headers=sign(TOKEN, url, params),
                base_url=BASE_URL,
            )
            seen.append(
                (response.status_code, _without_over(redis_snapshot(runtime.redis)) == before)
            )

        player = caller(send_status=False, on_pause=lambda: status(player.call_sid, "completed"))
        turns = Turns(
            *up_to_card_check(),
            ("card_check", Keys("1")),
            ("sms_code", handset.key_in_latest),
        )
        result = player.play(turns)
        # a "completed" status while the caller holds does not end or unlock anything
        assert_card_services(result)
        status(player.call_sid, "completed")
        status(player.call_sid, "failed")
        # Only the marker the agent API reads (`over`) is added: nothing of the call changes.
        assert seen == [(204, True)] * 3
        assert runtime.sessions.is_over(player.call_sid)


def _without_over(snapshot: dict[bytes, Any]) -> dict[bytes, Any]:
    return {
        key: {k: v for k, v in value.items() if k != b"over"} if isinstance(value, dict) else value
        for key, value in snapshot.items()
    }
