"""Whole calls that step up with a call back, which proves only the account called back."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from ivr.flows.engine import Ask, CallerInput, CallState, Hangup
from ivr.outbox import OutboxMessage
from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, CallResult, Gather, Keys, parse_twiml
from ivr.simulator import Enqueue as EnqueueVerb
from ivr.simulator import Hangup as HangupVerb
from ivr.store import keys
from ivr.store.sessions import SessionStore
from tests.conftest import (
    ALICE,
    BASE_URL,
    BOB,
    TOKEN,
    DemoCustomer,
    run_jobs,
)
from tests.support import (
    OUR_NUMBER,
    WRONG_PIN,
    Handset,
    StrictAnswer,
    StrictTurns,
    assert_card_services,
    assert_never_enqueued,
    auth_outcomes,
    pauses,
    sign,
)

CALLING_BACK = "We will call you back at the phone number on file in a moment."


CALLBACK_HELLO = "Hello, this is Example Bank returning your call about your card."


APOLOGY = "We are sorry, we cannot take your call right now"


def answer_call_back(
    caller: Callable[..., CallPlayer], ring: OutboxMessage, *answers: tuple[str, StrictAnswer]
) -> tuple[CallResult, StrictTurns]:
    """Pick up the call the worker placed: Twilio requests /voice/callback with its CallSid."""
    turns = StrictTurns(*answers)
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
        before: list[tuple[str, StrictAnswer]] = []
        if pin_first is not None:
            before = [("pin", Keys(pin_first + "#")), ("choose_method", Keys("1"))]
        turns = StrictTurns(
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
