"""The engine's door at run time: no flow puts an unproven caller through to an agent."""

from __future__ import annotations

from ivr.assurance import Assurance
from ivr.flows.engine import (
    CallState,
    Engine,
    Enqueue,
    Hangup,
    Say,
)
from ivr.flows.schema import (
    AuthenticateStep,
    AuthenticationPolicy,
    Choice,
    EnqueueStep,
    Flow,
    GotoStep,
    HangupStep,
    IdentifyStep,
    MenuStep,
    Queue,
    SayStep,
)
from tests.engine_fakes import (
    ALICE,
    ALICE_PHONE,
    ALICE_PIN,
    BOB,
    BOB_PIN,
    FakePorts,
    asked,
    digits,
    no_agent,
    spoken,
)


def policy_flow(**steps: object) -> Flow:
    """A flow built straight from the models: no loader, no checker in the way."""
    base: dict[str, object] = {
        "identify": IdentifyStep(
            kind="identify", prompt="Account?", next="menu", on_exhausted="refused"
        ),
        "menu": MenuStep(
            kind="menu",
            prompt="1 agent, 2 PIN, 3 vip, 9 identify again.",
            choices=[
                Choice(key="1", next="agent"),
                Choice(key="2", next="pin"),
                Choice(key="3", next="vip"),
                Choice(key="9", next="identify"),
            ],
            on_exhausted="refused",
        ),
        "pin": AuthenticateStep(
            kind="authenticate",
            method="pin",
            prompt="PIN?",
            failure_prompt="No. {attempts_left} left.",
            next="menu",
            on_exhausted="refused",
        ),
        "sms": AuthenticateStep(
            kind="authenticate",
            method="service_code",
            prompt="Code?",
            next="menu",
            on_exhausted="refused",
        ),
        "agent": EnqueueStep(kind="enqueue", queue="general"),
        "vip": EnqueueStep(kind="enqueue", queue="vip", say="VIP."),
        "refused": HangupStep(kind="hangup", say="Please use another route."),
    }
    base.update(steps)
    failure_route = str(base.pop("_failure_route", "refused"))
    return Flow(
        name="direct",
        start="identify",
        authentication=AuthenticationPolicy(max_failures=2, failure_route=failure_route),
        queues={
            "general": Queue(requires="one_factor", roles=("agent",)),
            "vip": Queue(requires="two_factor", roles=("specialist",)),
        },
        steps=base,  # type: ignore[arg-type]
    )


def call_on(flow: Flow, ports: FakePorts, account: str = ALICE) -> tuple[Engine, CallState]:
    engine = Engine(flow, ports)
    state = CallState(call_sid="CA1", caller=ALICE_PHONE, step=flow.start)
    assert asked(engine.start(state)) == "identify"
    assert asked(engine.answer(state, digits(account))) == "menu"
    return engine, state


class TestDoorAtRunTime:
    """Even a flow the checker never saw cannot put an unproven caller through to an agent."""

    def test_queue_without_authentication_goes_to_the_failure_route(self, ports: FakePorts) -> None:
        engine, state = call_on(policy_flow(), ports)
        actions = engine.answer(state, digits("1"))
        assert actions == [Say("Please use another route."), Hangup()]
        assert state.ended
        assert state.step == "refused"

    def test_one_factor_queue_opens_after_a_pin(self, ports: FakePorts) -> None:
        engine, state = call_on(policy_flow(), ports)
        engine.answer(state, digits("2"))
        engine.answer(state, digits(ALICE_PIN))
        assert engine.answer(state, digits("1")) == [Enqueue("agent", "general")]

    def test_two_factor_queue_refuses_a_pin_alone(self, ports: FakePorts) -> None:
        engine, state = call_on(policy_flow(), ports)
        engine.answer(state, digits("2"))
        engine.answer(state, digits(ALICE_PIN))
        actions = engine.answer(state, digits("3"))
        assert no_agent(actions)
        assert actions[-1] == Hangup()
        assert spoken(actions) == ["Please use another route."]

    def test_two_factor_queue_opens_with_pin_and_sms(self, ports: FakePorts) -> None:
        flow = policy_flow(
            pin=AuthenticateStep(
                kind="authenticate", method="pin", prompt="PIN?", next="sms", on_exhausted="refused"
            )
        )
        engine, state = call_on(flow, ports, account=BOB)
        engine.answer(state, digits("2"))
        assert asked(engine.answer(state, digits(BOB_PIN))) == "sms"
        assert asked(engine.answer(state, digits("246810"))) == "menu"
        assert state.assurance is Assurance.two_factor
        assert engine.answer(state, digits("3")) == [Say("VIP."), Enqueue("vip", "vip")]

    def test_failure_route_that_is_a_queue_hangs_up(self, ports: FakePorts) -> None:
        engine, state = call_on(policy_flow(_failure_route="agent"), ports)
        engine.answer(state, digits("2"))
        engine.answer(state, digits("000000"))
        actions = engine.answer(state, digits("000001"))
        assert actions[-1] == Hangup()
        assert no_agent(actions)
        assert state.ended

    def test_spent_budget_never_reaches_a_queue_whatever_was_proved(self, ports: FakePorts) -> None:
        # PIN proved, then two failed SMS codes; the failure route leads (wrongly) to a queue
        # the caller's one factor would otherwise open.
        flow = policy_flow(
            pin=AuthenticateStep(
                kind="authenticate", method="pin", prompt="PIN?", next="sms", on_exhausted="refused"
            ),
            sms=AuthenticateStep(
                kind="authenticate",
                method="service_code",
                prompt="Code?",
                next="menu",
                on_exhausted="refused",
            ),
            sorry=GotoStep(kind="goto", next="agent"),
            _failure_route="sorry",
        )
        engine, state = call_on(flow, ports, account=BOB)
        engine.answer(state, digits("2"))
        engine.answer(state, digits(BOB_PIN))
        assert state.assurance is Assurance.one_factor
        engine.answer(state, digits("000000"))
        actions = engine.answer(state, digits("000001"))
        assert no_agent(actions)
        assert actions[-1] == Hangup()
        assert state.ended

    def test_re_identifying_as_another_account_drops_proofs(self, ports: FakePorts) -> None:
        engine, state = call_on(policy_flow(), ports)
        engine.answer(state, digits("2"))
        engine.answer(state, digits(ALICE_PIN))
        assert state.assurance is Assurance.one_factor
        assert asked(engine.answer(state, digits("9"))) == "identify"
        assert asked(engine.answer(state, digits(BOB))) == "menu"
        assert state.account == BOB
        assert state.proofs == []
        assert state.assurance is Assurance.identified
        actions = engine.answer(state, digits("1"))
        assert no_agent(actions)

    def test_say_steps_on_the_way_are_spoken(self, ports: FakePorts) -> None:
        flow = policy_flow(
            menu=MenuStep(
                kind="menu",
                prompt="1 for news.",
                choices=[Choice(key="1", next="news")],
                on_exhausted="refused",
            ),
            news=SayStep(kind="say", say="Branches close at five.", next="bye"),
            bye=GotoStep(kind="goto", next="refused"),
        )
        engine, state = call_on(flow, ports)
        actions = engine.answer(state, digits("1"))
        assert actions == [
            Say("Branches close at five."),
            Say("Please use another route."),
            Hangup(),
        ]
