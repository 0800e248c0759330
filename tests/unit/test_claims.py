"""A proof belongs to the claim it was made for (SECURITY 10, 18, 21, 28).

A caller may claim another account later in the call (tests/flows/reidentify.yaml has a "different
account number" choice). Whatever they proved, and every code sent, for the first claim is then
worth nothing: an attacker who has a code emailed to their own address, then claims a victim's
account (one with no email on file, or an account number that does not exist) and keys in their
own code, hears what any wrong code gets and never reaches an agent. The per-call failure budget
is the caller's: it carries over to the new claim.

Played in-process on fakeredis: the player never really pauses and the worker's jobs run at
each hold (rq's SimpleWorker), as a worker would while the caller waits.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from ivr.assurance import Assurance
from ivr.auth import claims, codes
from ivr.auth.verifier import Verifier
from ivr.flows.checks import check_flow, errors
from ivr.flows.engine import (
    Ask,
    CallerInput,
    CallState,
    Delivery,
    DeliveryStatus,
    Engine,
    Enqueue,
    Say,
)
from ivr.flows.loader import load_flow, load_flow_with_marks
from ivr.outbox import Outbox
from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, CallResult, Keys
from ivr.simulator.phone import Phone
from tests.conftest import ALICE, BOB, REPO_ROOT, DemoCustomer, PlayerFactory, make_app, run_jobs
from tests.support import Answer, Turns, assert_never_enqueued, authentications

TEST_FLOWS = REPO_ROOT / "tests" / "flows"
REIDENTIFY = load_flow(TEST_FLOWS / "reidentify.yaml")

ATTACKER = BOB  # an account of their own, with their own email address on file
UNKNOWN = "55500555"  # an account number nobody has
HOLD = "Please hold while we email a code to the address on file."
CODE_WRONG = "That code did not match. You have 1 attempt left."
NO_EMAIL = "Sorry, we cannot send an email right now."
OTHER_ROUTE = "We could not verify your identity on this call."


@pytest.fixture
def app(redis: Any, outbox_path: Path) -> Flask:
    """The IVR answering with the re-identify flow."""
    flask_app = make_app(redis, outbox=outbox_path, flows_dir=TEST_FLOWS, flow="reidentify")
    flask_app.config["TESTING"] = True
    return flask_app


@pytest.fixture
def victims(runtime: Runtime, customers: dict[str, DemoCustomer]) -> dict[str, str]:
    """Alice has no email on file; UNKNOWN is no account at all. Bob, the attacker, has one."""
    runtime.customers.update(ALICE.account, email=None)
    return {"no_email": ALICE.account, "unknown": UNKNOWN}


class Mailbox:
    """The attacker's own mailbox: the codes emailed to their address on file."""

    def __init__(self, outbox: Path) -> None:
        self.phone = Phone(Outbox(outbox))
        self.outbox = Outbox(outbox)

    def key_in_latest(self) -> Keys:
        code = self.phone.latest_code()
        assert code is not None, "no code was emailed"
        return Keys(code + "#")

    def key_in_wrong(self) -> Keys:
        code = self.phone.latest_code()
        assert code is not None, "no code was emailed"
        return Keys(f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}#")


@pytest.fixture
def mailbox(worker_env: Path) -> Mailbox:
    return Mailbox(worker_env)


@pytest.fixture
def call(player: PlayerFactory, runtime: Runtime, worker_env: Path) -> Callable[..., CallPlayer]:
    """A caller from the attacker's phone; `worker=False`: no job ever runs during the call."""

    def make(*, worker: bool = True) -> CallPlayer:
        def observer(kind: str, line: str) -> None:
            if kind == "pause" and worker:
                run_jobs(runtime.redis)

        return player(ATTACKER.phone, pause_scale=0, observer=observer)

    return make


def own_code_then(victim: str, mailbox: Mailbox, answer: Answer) -> list[tuple[str, Answer]]:
    """Claim the attacker's account, have a code emailed, say nothing at the code prompt (back
    to the menu), claim `victim`, ask for a code again and key in `answer`."""
    return [
        ("identify", Keys(ATTACKER.account + "#")),
        ("main_menu", Keys("1")),
        ("email_code", None),
        ("main_menu", Keys("9")),
        ("identify", Keys(victim + "#")),
        ("main_menu", Keys("1")),
        ("email_code", answer),
    ]


def reply_to_code(result: CallResult) -> str:
    """The TwiML answering the last code the caller keyed in."""
    answers = [e for e in result.events if "/step/email_code" in e.url and e.params.get("Digits")]
    assert answers, result.transcript(requests=True)
    return answers[-1].body


# -- the attack, whole calls -------------------------------------------------------------------


class TestAnotherClaimVoidsTheCode:
    @pytest.mark.parametrize("victim", ["no_email", "unknown"])
    def test_own_code_keyed_in_for_a_victim_is_refused(
        self,
        call: Callable[..., CallPlayer],
        mailbox: Mailbox,
        victims: dict[str, str],
        runtime: Runtime,
        victim: str,
    ) -> None:
        player = call()
        result = player.play(Turns(*own_code_then(victims[victim], mailbox, mailbox.key_in_latest)))

        assert_never_enqueued(result)
        assert result.said(CODE_WRONG), result.transcript()
        # one email, to the attacker's own address; nothing to the victim
        assert [(m.channel, m.to) for m in mailbox.outbox.messages()] == [("email", BOB.email)]
        outcome = "failure" if victim == "no_email" else "failure_unknown_account"
        assert authentications(runtime.redis, player.call_sid) == [("email_otp", outcome)]

    @pytest.mark.parametrize("victim", ["no_email", "unknown"])
    def test_sounds_exactly_like_a_wrong_code(
        self,
        call: Callable[..., CallPlayer],
        mailbox: Mailbox,
        victims: dict[str, str],
        victim: str,
    ) -> None:
        """The attacker's code for a victim gets the same bytes as a wrong code for their own
        account after the same path (SECURITY 21): nothing tells them which accounts exist."""
        attack = call().play(Turns(*own_code_then(victims[victim], mailbox, mailbox.key_in_latest)))
        wrong = call().play(Turns(*own_code_then(ATTACKER.account, mailbox, mailbox.key_in_wrong)))

        assert reply_to_code(attack) == reply_to_code(wrong)
        assert CODE_WRONG in reply_to_code(attack)

    def test_the_failure_budget_carries_over_to_the_next_claim(
        self,
        call: Callable[..., CallPlayer],
        mailbox: Mailbox,
        victims: dict[str, str],
        runtime: Runtime,
    ) -> None:
        """One failure for the first victim, one for the second: the call's two are spent, and
        a new claim does not give the caller a fresh budget (SECURITY 18)."""
        turns = own_code_then(victims["no_email"], mailbox, mailbox.key_in_latest)
        turns += [
            ("main_menu", Keys("9")),
            ("identify", Keys(victims["unknown"] + "#")),
            ("main_menu", Keys("1")),
            ("email_code", mailbox.key_in_latest),
        ]
        player = call()
        result = player.play(Turns(*turns))

        assert_never_enqueued(result)
        assert result.heard[-1].startswith(OTHER_ROUTE), result.transcript()
        assert [o for _, o in authentications(runtime.redis, player.call_sid)] == [
            "failure",
            "failure_unknown_account",
        ]

    def test_the_attackers_own_claim_still_works(
        self, call: Callable[..., CallPlayer], mailbox: Mailbox, victims: dict[str, str]
    ) -> None:
        """The binding refuses other claims only: the same path for their own account opens."""
        result = call().play(
            Turns(*own_code_then(ATTACKER.account, mailbox, mailbox.key_in_latest))
        )
        assert result.outcome == "enqueued", result.transcript()
        assert result.queue == "balances"

    def test_a_send_given_up_on_never_goes_out(
        self,
        call: Callable[..., CallPlayer],
        mailbox: Mailbox,
        victims: dict[str, str],
        runtime: Runtime,
    ) -> None:
        """No worker runs while the caller holds, so they hear the email cannot be sent, then
        claim a victim. When the worker finally runs the stalled job, nothing goes out: the
        caller was told it failed (SECURITY 26)."""
        turns = [
            ("identify", Keys(ATTACKER.account + "#")),
            ("main_menu", Keys("1")),
            ("main_menu", Keys("9")),
            ("identify", Keys(victims["no_email"] + "#")),
        ]
        result = call(worker=False).play(Turns(*turns))
        assert result.said(HOLD) and result.said(NO_EMAIL), result.transcript()
        assert_never_enqueued(result)

        assert run_jobs(runtime.redis)  # the stalled job runs now
        assert mailbox.outbox.messages() == []


# -- the checker agrees with the engine -------------------------------------------------------


class TestCheckerAgrees:
    def test_the_reidentify_flow_passes_the_checks(self) -> None:
        flow, marks = load_flow_with_marks(TEST_FLOWS / "reidentify.yaml")
        assert errors(check_flow(flow, marks)) == []

    def test_a_queue_reached_right_after_a_new_claim_is_refused(self, tmp_path: Path) -> None:
        """PIN proved, then "different account number" straight to the queue: the checker
        refuses it, because a new claim carries no proof, and the engine shuts the door."""
        path = tmp_path / "leaky.yaml"
        path.write_text(LEAKY_FLOW)
        flow, marks = load_flow_with_marks(path)
        found = errors(check_flow(flow, marks, str(path)))
        assert len(found) == 1, found
        assert found[0].path == "steps.agent.queue"
        assert "with assurance `identified`" in found[0].message
        assert "pin -> menu -(choices[1].next)-> again -> agent" in found[0].message

        engine = Engine(flow, ClaimPorts())
        state = CallState(call_sid="CA1", caller="+15005550006", step=flow.start)
        engine.start(state)
        engine.answer(state, CallerInput(digits=ALICE.account))
        engine.answer(state, CallerInput(digits=ALICE.pin))
        assert state.assurance is Assurance.one_factor
        engine.answer(state, CallerInput(digits="9"))
        actions = engine.answer(state, CallerInput(digits=BOB.account))
        assert not any(isinstance(a, Enqueue) for a in actions)
        assert state.assurance is Assurance.identified


LEAKY_FLOW = """
name: leaky
start: identify
authentication:
  failure_route: refused
queues:
  general: {requires: one_factor, roles: [agent]}
steps:
  identify:
    kind: identify
    prompt: Your account number, please.
    next: pin
    on_exhausted: refused
  pin:
    kind: authenticate
    method: pin
    prompt: Your PIN, please.
    next: menu
    on_exhausted: refused
  menu:
    kind: menu
    prompt: For an agent press 1, for another account press 9.
    choices:
      - key: 1
        next: agent
      - key: 9
        next: again
    on_exhausted: refused
  again:
    kind: identify
    prompt: The other account number, please.
    next: agent
    on_exhausted: refused
  agent:
    kind: enqueue
    queue: general
  refused:
    kind: hangup
    say: Please use another route.
"""


# -- the engine, pure ------------------------------------------------------------------------


class ClaimPorts:
    """Alice's PIN is right; every port call is recorded, in order, with the claim it saw."""

    def __init__(self, status: DeliveryStatus = "pending") -> None:
        self.status = status
        self.calls: list[tuple[str, str | None, str]] = []

    def account_for_caller(self, caller: str) -> str | None:
        return None

    def claim(self, digits: str) -> str:
        return digits if digits in (ALICE.account, BOB.account) else "unmatched-x"

    def drop_claim(self, state: CallState) -> None:
        self.calls.append(("drop_claim", state.account, ""))

    def verify(self, state: CallState, method: str, answer: str | None) -> bool:
        self.calls.append(("verify", state.account, method))
        return state.account == ALICE.account and answer == ALICE.pin

    def request_code(self, state: CallState, method: str, max_wait: int) -> Delivery:
        self.calls.append(("request_code", state.account, f"{method}/{max_wait}"))
        return "queued"

    def delivery_status(self, state: CallState, method: str) -> DeliveryStatus:
        return self.status

    def abandon_delivery(self, state: CallState, method: str) -> None:
        self.calls.append(("abandon_delivery", state.account, method))

    def request_callback(self, state: CallState, step: str) -> Delivery:  # pragma: no cover
        raise AssertionError("no callbacks in this flow")

    def note(self, state: CallState, event: str, **fields: str) -> None:
        pass


def at_menu(ports: ClaimPorts, account: str = ALICE.account) -> tuple[Engine, CallState]:
    engine = Engine(REIDENTIFY, ports)
    state = CallState(call_sid="CA1", caller="+15005550006", step=REIDENTIFY.start)
    engine.start(state)
    engine.answer(state, CallerInput(digits=account))
    return engine, state


class TestEngineClaims:
    def test_the_claim_id_is_what_the_ports_say_never_the_digits(self) -> None:
        _, state = at_menu(ClaimPorts(), account="31415926")
        assert state.account == "unmatched-x"

    def test_a_new_claim_drops_proofs_and_sends_keeps_failures(self) -> None:
        ports = ClaimPorts()
        engine, state = at_menu(ports)
        engine.answer(state, CallerInput(digits="2"))
        engine.answer(state, CallerInput(digits="000000"))  # a wrong PIN: one failure
        engine.answer(state, CallerInput(digits="2"))
        engine.answer(state, CallerInput(digits=ALICE.pin))
        assert state.step == "card_code" and state.holding
        assert state.proofs == ["pin"]
        state.step, state.holding = "main_menu", True  # as if the hold were left behind
        engine.answer(state, CallerInput(digits="9"))
        ports.calls.clear()

        engine.answer(state, CallerInput(digits=BOB.account))

        assert ports.calls[0] == ("drop_claim", ALICE.account, "")  # told before it changes
        assert (state.account, state.proofs, state.holding, state.waited) == (
            BOB.account,
            [],
            False,
            0,
        )
        assert state.failures == 1

    def test_the_same_claim_again_drops_its_proofs(self) -> None:
        """As the flow checker reasons: after any identify, nothing is proved."""
        ports = ClaimPorts()
        engine, state = at_menu(ports)
        engine.answer(state, CallerInput(digits="2"))
        engine.answer(state, CallerInput(digits=ALICE.pin))
        state.step, state.holding = "main_menu", False
        engine.answer(state, CallerInput(digits="9"))
        ports.calls.clear()
        engine.answer(state, CallerInput(digits=ALICE.account))
        assert ("drop_claim", ALICE.account, "") in ports.calls
        assert state.proofs == []
        assert state.assurance == Assurance.identified

    def test_a_code_is_asked_for_with_the_steps_max_wait(self) -> None:
        ports = ClaimPorts()
        engine, state = at_menu(ports)
        engine.answer(state, CallerInput(digits="1"))
        assert ("request_code", ALICE.account, "email_otp/8") in ports.calls


class TestGivingUpAbandonsTheSend:
    def hold_until(self, ports: ClaimPorts) -> tuple[Engine, CallState, list[Any]]:
        engine, state = at_menu(ports)
        engine.answer(state, CallerInput(digits="1"))
        actions: list[Any] = []
        for _ in range(10):
            actions = engine.poll(state)
            if not state.holding:
                break
        return engine, state, actions

    def test_a_hold_past_max_wait_abandons_the_send(self) -> None:
        ports = ClaimPorts("pending")
        _, state, actions = self.hold_until(ports)
        assert Say(NO_EMAIL) in actions
        assert state.waited >= 8
        assert ports.calls[-1] == ("abandon_delivery", ALICE.account, "email_otp")

    def test_a_failed_send_is_abandoned_too(self) -> None:
        ports = ClaimPorts("failed")
        _, _, actions = self.hold_until(ports)
        assert Say(NO_EMAIL) in actions
        assert ports.calls[-1] == ("abandon_delivery", ALICE.account, "email_otp")

    def test_a_sent_code_is_not(self) -> None:
        ports = ClaimPorts("sent")
        _, _, actions = self.hold_until(ports)
        assert isinstance(actions[-1], Ask) and actions[-1].step == "email_code"
        assert not any(name == "abandon_delivery" for name, _, _ in ports.calls)


# -- the check itself: a wrong code, whatever is on file -------------------------------------


@pytest.fixture
def hmacs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The messages of every HMAC computed while the test runs (spying on the stdlib)."""
    seen: list[bytes] = []
    real = hmac.new

    def spy(key: bytes, msg: bytes | None = None, digestmod: Any = None) -> Any:
        seen.append(msg or b"")
        return real(key, msg, digestmod)

    monkeypatch.setattr(codes.hmac, "new", spy)
    yield seen


class TestCheckCodeSoundsTheSame:
    """No code on record, no customer, no destination: each costs exactly the one HMAC a wrong
    code costs, and fails like it (SECURITY 21)."""

    def test_one_hmac_whatever_is_on_file(
        self, runtime: Runtime, customers: dict[str, DemoCustomer], hmacs: list[bytes]
    ) -> None:
        possession = runtime.possession
        alice = runtime.customers.get(ALICE.account)
        no_email = runtime.customers.update(BOB.account, email=None)
        sid = "CA" + "ab" * 16
        code = codes.make_code(6)
        purpose = codes.otp_purpose(sid, "email_otp", ALICE.account, ALICE.email)
        issued = codes.IssuedCode(codes.digest(runtime.settings.code_key or "", purpose, code), 9e9)
        cases = {
            "wrong code": (CallState(sid, "+1", "email_code", account=ALICE.account), alice),
            "no destination": (CallState(sid, "+1", "email_code", account=BOB.account), no_email),
            "no customer": (CallState(sid, "+1", "email_code", account="unmatched-1"), None),
        }
        for name, (state, customer) in cases.items():
            possession.codes.issue_otp(sid, "email_otp", issued, 600)
            hmacs.clear()
            assert not possession.check_code(state, "email_otp", customer, "000000"), name
            assert len(hmacs) == 1, name
        possession.codes.consume_otp(sid, "email_otp")
        hmacs.clear()
        state = CallState(sid, "+1", "email_code", account=ALICE.account)
        assert not possession.check_code(state, "email_otp", alice, code)  # no record at all
        assert len(hmacs) == 1


# -- the claim id ----------------------------------------------------------------------------


class TestClaimIds:
    KEY = "claim-key-0123456789abcdef"

    def test_unmatched_claims_are_keyed_digests(self) -> None:
        claim = claims.unmatched_claim(self.KEY, "31415926")
        assert claim.startswith("unmatched-") and "31415926" not in claim
        assert not claim.isdigit()
        assert claim == claims.unmatched_claim(self.KEY, "31415926")  # stable: one scope
        assert claim != claims.unmatched_claim(self.KEY, "31415927")
        assert claim != claims.unmatched_claim("another-key-0123456789", "31415926")
        plain = hashlib.sha256(b"31415926").hexdigest()
        assert plain[:32] not in claim  # keyed, not a bare hash anyone can enumerate

    def test_the_verifier_keeps_a_matched_account_and_digests_the_rest(
        self, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        verifier = runtime.engine.ports
        assert isinstance(verifier, Verifier)
        assert verifier.claim(ALICE.account) == ALICE.account
        key = runtime.settings.code_key or ""
        assert verifier.claim(UNKNOWN) == claims.unmatched_claim(key, UNKNOWN)

    def test_without_a_key_a_typed_claim_fails_closed(
        self, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        verifier = runtime.engine.ports
        assert isinstance(verifier, Verifier)
        verifier.claim_key = None
        with pytest.raises(RuntimeError, match="no key"):
            verifier.claim(ALICE.account)

    def test_the_otp_purpose_binds_claim_and_destination(self) -> None:
        sid = "CA" + "ab" * 16
        base = codes.otp_purpose(sid, "email_otp", ALICE.account, ALICE.email)
        assert base != codes.otp_purpose(sid, "email_otp", BOB.account, ALICE.email)
        assert base != codes.otp_purpose(sid, "email_otp", ALICE.account, BOB.email)
        assert base != codes.otp_purpose(sid, "email_otp", ALICE.account, None)
        stored = codes.digest(self.KEY, base, "123456")
        other = codes.otp_purpose(sid, "email_otp", "unmatched-x", None)
        assert not codes.matches(self.KEY, other, "123456", stored)


class TestCallbackProofStaysBound:
    def test_the_call_back_proves_only_the_account_it_called(
        self, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        verifier = runtime.engine.ports
        assert isinstance(verifier, Verifier)
        state = CallState(
            "CA1", "+1", "call_back", account=ALICE.account, called_back=ALICE.account
        )
        assert verifier.verify(state, "callback", "1")
        for other in (BOB.account, verifier.claim(UNKNOWN)):
            state.account = other  # what a new claim on the call back leaves
            assert not verifier.verify(state, "callback", "1")
