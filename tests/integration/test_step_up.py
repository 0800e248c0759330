"""Stepped up in the same call, never asked twice (issue 7, item 1).

Real gunicorn, a real rq worker and a real Redis: a caller who proved a PIN asks for a card
change, proves something they have with the SMS code the worker put in the outbox, and lands in
the card-services queue at two factors, without keying the PIN a second time. And a flow in the
old form, where two enqueue steps could send callers to one queue on different terms, no longer
loads: `ivr flows check` and `ivr serve` refuse it, naming each line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ivr.assurance import Assurance
from ivr.flows.engine import CallState
from ivr.outbox import Outbox
from ivr.simulator import CallResult, Gather, HttpTransport, Keys
from ivr.simulator.phone import Phone
from ivr.simulator.player import CallerInput
from ivr.store.customers import Customer
from ivr.store.sessions import SessionStore
from tests.support import authentications, make_player, seed_customer

TEST_FLOWS = Path(__file__).resolve().parents[1] / "flows"
ACCOUNT = "12345678"
PHONE = "+14155550100"  # the number on file: the code goes there
CALLING_FROM = "+14155550123"  # not on file
PIN = "583920"
CARD_SERVICES = "card-services"


@pytest.fixture
def customer(redis_url: str, pin_hash: str) -> Customer:
    return seed_customer(redis_url, Customer(account=ACCOUNT, phone=PHONE, pin_hash=pin_hash))


class Caller:
    """Answers each question with the next scripted answer (a callable works it out at the
    prompt); `asked` names the step of every question, in order."""

    def __init__(self, *answers: object) -> None:
        self._answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, gather: Gather, heard: list[str]) -> CallerInput | None:
        assert gather.action is not None
        self.asked.append(urlsplit(gather.action).path.rsplit("/", 1)[-1])
        if not self._answers:
            return None
        answer = self._answers.pop(0)
        return answer() if callable(answer) else answer  # type: ignore[no-any-return]


def code_on_the(phone: Phone) -> Keys:
    code = phone.latest_code()
    assert code is not None, "no code reached the phone on file"
    return Keys(f"{code}#")


def final_state(rdb: object, call_sid: str) -> CallState:
    stored = SessionStore(rdb, 3600).load(call_sid)  # type: ignore[arg-type]
    assert stored is not None
    return stored.state


def assert_card_services_at_two_factors(result: CallResult, rdb: object, call_sid: str) -> None:
    assert result.outcome == "enqueued", result.transcript()
    assert result.queue == CARD_SERVICES
    state = final_state(rdb, call_sid)
    assert sorted(state.proofs) == ["pin", "sms_otp"]
    assert state.assurance is Assurance.two_factor
    assert authentications(rdb, call_sid) == [("pin", "success"), ("sms_otp", "success")]


class TestStepUp:
    def test_pin_caller_asking_for_a_card_change_is_stepped_up_by_sms(
        self, web_factory, worker_factory, auth_token, customer, rdb, outbox_path
    ) -> None:
        """The shipped flow: PIN, the main menu, 2 (card), 1 (text me), the code."""
        env = {"IVR_OUTBOX": str(outbox_path)}
        web = web_factory(env)
        worker_factory(env)
        phone = Phone(Outbox(outbox_path))
        caller = Caller(
            Keys(f"{ACCOUNT}#"),
            Keys("1"),
            Keys(f"{PIN}#"),
            Keys("2"),
            Keys("1"),
            lambda: code_on_the(phone),
        )
        call = make_player(web.base_url, auth_token, HttpTransport(), from_number=CALLING_FROM)

        result = call.play(caller)

        assert_card_services_at_two_factors(result, rdb, call.call_sid)
        assert caller.asked == [
            "identify", "choose_method", "pin", "main_menu", "card_check", "sms_code",
        ]  # fmt: skip
        (sms,) = Outbox(outbox_path).messages()
        assert (sms.channel, sms.to) == ("sms", PHONE)

    def test_a_factor_proved_earlier_in_the_call_is_not_asked_again(
        self, web_factory, worker_factory, auth_token, customer, rdb, outbox_path
    ) -> None:
        """tests/flows/step_up.yaml: the card path lists the PIN and a text; the PIN is
        already proved, so the caller goes straight to the text."""
        env = {
            "IVR_OUTBOX": str(outbox_path),
            "IVR_FLOWS_DIR": str(TEST_FLOWS),
            "IVR_FLOW": "step_up",
        }
        web = web_factory(env)
        worker_factory(env)
        phone = Phone(Outbox(outbox_path))
        caller = Caller(
            Keys(f"{ACCOUNT}#"),
            Keys(f"{PIN}#"),
            Keys("2"),
            lambda: code_on_the(phone),
        )
        call = make_player(web.base_url, auth_token, HttpTransport(), from_number=CALLING_FROM)

        result = call.play(caller)

        assert_card_services_at_two_factors(result, rdb, call.call_sid)
        assert caller.asked == ["identify", "pin", "main_menu", "card_sms"]
        assert not result.said("Card changes need your PIN")


# A flow in the old form: card services at two factors on one path and one factor on another.
OLD_FORM = """\
name: split
start: identify
authentication:
  failure_route: bye
steps:
  identify:
    kind: identify
    prompt: Your account number, please.
    next: pin
    on_exhausted: bye
  pin:
    kind: authenticate
    method: pin
    prompt: Your PIN, please.
    next: menu
    on_exhausted: bye
  menu:
    kind: menu
    prompt: For a card change press 1, for a lost card press 2.
    choices:
      - key: 1
        next: strict
      - key: 2
        next: lax
    on_exhausted: bye
  strict:
    kind: enqueue
    queue: card-services
    requires: two_factor
  lax:
    kind: enqueue
    queue: card-services
    requires: one_factor
  bye:
    kind: hangup
"""


class TestOneQueueTwoRequirements:
    def test_no_longer_loads(self, tmp_path: Path, web_factory) -> None:
        flows = tmp_path / "flows"
        flows.mkdir()
        path = flows / "split.yaml"
        path.write_text(OLD_FORM, encoding="utf-8")
        lines = [i for i, t in enumerate(OLD_FORM.splitlines(), 1) if "requires:" in t]
        assert len(lines) == 2

        checked = subprocess.run(
            [sys.executable, "-m", "ivr", "flows", "check", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert checked.returncode == 1, checked.stdout + checked.stderr
        out = checked.stdout + checked.stderr
        for line in lines:
            assert f"{path}:{line}:5: " in out, out
        assert out.count("`requires:` no longer goes on an enqueue step") == 2
        assert "declare it once under `queues:`" in out

        with pytest.raises(RuntimeError, match="no longer goes on an enqueue step"):
            web_factory({"IVR_FLOWS_DIR": str(flows), "IVR_FLOW": "split"})
