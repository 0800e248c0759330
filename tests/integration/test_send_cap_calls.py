"""Send caps end to end (SECURITY 14, 30): real gunicorn, a real rq worker, a real Redis.

A customer proves their PIN, asks for card services and keeps pressing "text me" and `*`
(a new code) on their own account. Only the texts that went out count: once their own caps
stop them, another customer whose number has the same country prefix still gets a code. And
one call may ask for at most IVR_CODE_REQUESTS_PER_CALL codes of any kind, however many web
processes serve it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ivr.auth.knowledge import SecretHasher, enrol
from ivr.outbox import Outbox
from ivr.simulator import CallResult, Gather, HttpTransport, Keys
from ivr.simulator.phone import Phone
from ivr.simulator.player import CallerInput
from ivr.store.customers import Customer
from tests.integration.test_calls import AlternatingTransport
from tests.support import audit_events, make_player, never_enqueued, seed_customer

ALICE = ("12345678", "+14155550100", "583920")  # account, phone on file, PIN
BOB = ("87654321", "+14155550199", "902714")  # the same country prefix (+1)
CARD_CHECK = "Card changes need one more check."
SMS_HOLD = "Please hold while we text a code to the phone number on file"
NO_SMS = "Sorry, we cannot send a text message to the phone number on file."
NO_CALL_BACK = "Sorry, we cannot call you back right now."
CARD_SERVICES = "card-services"
# Small caps, so one caller would exhaust the prefix quickly if refusals counted.
SMALL_CAPS = {
    "IVR_SEND_LIMIT_ACCOUNT": "3",
    "IVR_SEND_LIMIT_DESTINATION": "3",
    "IVR_SEND_LIMIT_PREFIX": "4",
}

Answer = CallerInput | None | Callable[[], CallerInput | None]


class Caller:
    """Answers each <Gather> with the next answer (a callable is asked at the prompt, e.g. to
    read the code off the phone); silent once the script is spent."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)

    def __call__(self, gather: Gather, heard_so_far: list[str]) -> CallerInput | None:
        if not self.answers:
            return None
        answer = self.answers.pop(0)
        return answer() if callable(answer) else answer


def to_card_check(who: tuple[str, str, str]) -> list[Answer]:
    account, _, pin = who
    return [Keys(f"{account}#"), Keys("1"), Keys(f"{pin}#"), Keys("2")]


def key_in_code(phone: Phone) -> Callable[[], CallerInput | None]:
    """At the prompt: the newest code on the phone keyed in; silence if none arrived."""

    def answer() -> CallerInput | None:
        code = phone.latest_code()
        return Keys(f"{code}#") if code else None

    return answer


def heard(result: CallResult, text: str) -> int:
    return sum(text in line for line in result.heard)


def caps_refused(rdb: object, call_sid: str) -> list[str]:
    return [
        e.get("detail", "")
        for e in audit_events(rdb, call_sid)
        if e["event"] == "delivery" and e["outcome"] == "send_capped"
    ]


@pytest.fixture(scope="module")
def hasher(pepper: str) -> SecretHasher:
    return SecretHasher(pepper=pepper)


@pytest.fixture
def customers(redis_url: str, hasher: SecretHasher) -> None:
    for account, phone, pin in (ALICE, BOB):
        customer = Customer(account=account, phone=phone, pin_hash=enrol(hasher, "pin", pin))
        seed_customer(redis_url, customer)


@pytest.fixture
def outbox_env(outbox_path: Path) -> dict[str, str]:
    """The phones of both customers: the outbox web and worker share."""
    return {"IVR_OUTBOX": str(outbox_path)}


class TestPrefixBudget:
    def test_a_caller_stopped_by_their_own_caps_leaves_the_prefix_to_others(
        self, web_factory, worker_factory, outbox_env, auth_token, customers, rdb, outbox_path
    ) -> None:
        env = outbox_env | SMALL_CAPS
        web = web_factory(env)
        worker_factory(env)
        outbox = Outbox(outbox_path)

        # Call 1: a text, three `*` (the last one more than a call may ask), then "text me"
        # again and again from the menu.
        call = make_player(web.base_url, auth_token, HttpTransport())
        first = call.play(
            Caller(*to_card_check(ALICE), Keys("1"), *[Keys("*#")] * 3, *[Keys("1")] * 6)
        )
        assert heard(first, SMS_HOLD) == 3, first.transcript()
        assert heard(first, NO_SMS) == 7
        # Call 2: the same customer again, "text me" over and over: their account is spent.
        again = make_player(web.base_url, auth_token, HttpTransport())
        second = again.play(Caller(*to_card_check(ALICE), *[Keys("1")] * 8))
        assert heard(second, NO_SMS) == 8 and heard(second, SMS_HOLD) == 0, second.transcript()
        assert [m.to for m in outbox.messages()] == [ALICE[1]] * 3

        # Another customer, the same country prefix: their code still goes out.
        phone = Phone(outbox)
        bob = make_player(web.base_url, auth_token, HttpTransport())
        result = bob.play(Caller(*to_card_check(BOB), Keys("1"), key_in_code(phone)))
        assert result.outcome == "enqueued", result.transcript()
        assert result.queue == CARD_SERVICES
        assert heard(result, NO_SMS) == 0
        assert [m.to for m in outbox.messages()] == [ALICE[1]] * 3 + [BOB[1]]
        assert int(rdb.get("ivr:sends:prefix:1")) == 4  # the sends made, not the 19 presses
        assert caps_refused(rdb, call.call_sid) == ["call"] * 7
        assert caps_refused(rdb, again.call_sid) == ["account"] * 8
        assert ALICE[1] not in web.log()  # the audit names the cap, the log no destination


class TestPerCall:
    def test_one_call_asks_for_three_codes_of_any_kind_across_web_processes(
        self, web_factory, worker_factory, outbox_env, auth_token, customers, rdb, outbox_path
    ) -> None:
        webs = [web_factory(outbox_env), web_factory(outbox_env)]
        worker_factory(outbox_env)
        transport = AlternatingTransport(HttpTransport(), [w.base_url for w in webs], auth_token)
        call = make_player(webs[0].base_url, auth_token, transport)

        result = call.play(
            Caller(
                *to_card_check(ALICE),
                Keys("1"),  # a text
                Keys("*#"),  # a new one
                Keys("*#"),  # and another: the third request
                Keys("*#"),  # a fourth is refused...
                Keys("3"),  # ...and a call back too
            )
        )

        assert heard(result, SMS_HOLD) == 3, result.transcript()
        assert heard(result, NO_SMS) == heard(result, NO_CALL_BACK) == 1
        assert heard(result, CARD_CHECK) >= 4
        assert never_enqueued(result)
        assert [m.channel for m in Outbox(outbox_path).messages()] == ["sms"] * 3
        assert caps_refused(rdb, call.call_sid) == ["call"] * 2
        assert int(rdb.get(f"ivr:sends:call:{call.call_sid}")) == 3
        served = {netloc for netloc, _ in transport.sent}
        assert served == {urlsplit(w.base_url).netloc for w in webs}

        # The bound is per call: the same customer, in a new call, gets a code.
        phone = Phone(Outbox(outbox_path))
        later = make_player(webs[1].base_url, auth_token, HttpTransport())
        done = later.play(Caller(*to_card_check(ALICE), Keys("1"), key_in_code(phone)))
        assert done.outcome == "enqueued" and done.queue == CARD_SERVICES, done.transcript()
