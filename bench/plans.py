"""What each benchmark call is: its customer, its calling number, its script, how it must end.

Every call has a customer and a calling number of its own, so nothing one call does (a failure,
a text) counts against another call's account, phone or number: the numbers measure the
webhooks, never a lockout, a send cap or an abuse limit, and the newest text to a phone is the
code of the one call that asked for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from redis import Redis

from ivr.auth.knowledge import SecretHasher
from ivr.dev.customers import DEMO_CUSTOMERS, DemoCustomer, customer_record
from ivr.flows.schema import AuthenticateStep, Flow
from ivr.simulator import Keys, Speech
from ivr.store.customers import RedisCustomerDirectory

FLOW_NAME = "default"  # the scripts below follow flows/default.yaml
SMS_CODE_STEP = "sms_code"  # its step that asks for the texted code
TEMPLATE = DEMO_CUSTOMERS[0]  # whose secrets, name and address every benchmark customer has

WRONG_PIN = "246810"
WRONG_PASSCODE = "orange tractor ninety"
FAILURE_ROUTE_TEXT = "could not verify your identity"


@dataclass(frozen=True)
class RequestCode:
    """The menu choice that has a code texted to the phone on file; the hold starts here."""

    keys: Keys


@dataclass(frozen=True)
class CodeFromOutbox:
    """At the code prompt: the newest code texted to `phone` since the call started, then #."""

    phone: str


ScriptItem = Keys | Speech | RequestCode | CodeFromOutbox


@dataclass(frozen=True)
class CallPlan:
    """One call to play: who it claims to be, who calls, what they say, and how it must end."""

    label: str
    customer: DemoCustomer
    from_number: str
    inputs: tuple[ScriptItem, ...]
    expect_outcome: str
    expect_queue: str | None = None
    expect_said: str | None = None

    @property
    def texts(self) -> int:
        return sum(1 for item in self.inputs if isinstance(item, RequestCode))


def customer(index: int) -> DemoCustomer:
    """The customer of call `index`: the template's secrets; account, phone and email its own."""
    return replace(
        TEMPLATE,
        account=f"4{index:07d}",
        phone=f"+1555{index:07d}",
        email=f"caller{index}@example.com",
    )


def unlisted_number(index: int) -> str:
    """A calling number of call `index`'s own, on file for nobody (+1556... vs +1555...)."""
    return f"+1556{index:07d}"


def pin_success(index: int) -> CallPlan:
    """Types the account number, chooses PIN on the keypad, types it, presses 1 (balance)."""
    who = customer(index)
    return CallPlan(
        "pin success",
        who,
        unlisted_number(index),
        (Keys(who.account + "#"), Keys("1"), Keys(who.pin + "#"), Keys("1")),
        "enqueued",
        expect_queue="balances",
    )


def passcode_success(index: int) -> CallPlan:
    """Calls from the number on file, uses it (*#), says "passcode", the passcode, "balance"."""
    who = customer(index)
    return CallPlan(
        "passcode success",
        who,
        who.phone,
        (Keys("*#"), Speech("passcode"), Speech(who.passcode), Speech("balance")),
        "enqueued",
        expect_queue="balances",
    )


def two_failures(index: int) -> CallPlan:
    """A wrong PIN, then a wrong passcode: the flow's failure route, never a queue."""
    who = customer(index)
    return CallPlan(
        "two failures",
        who,
        unlisted_number(index),
        (
            Keys(who.account + "#"),
            Keys("1"),
            Keys(WRONG_PIN + "#"),
            Keys("2"),
            Speech(WRONG_PASSCODE),
        ),
        "hung_up",
        expect_said=FAILURE_ROUTE_TEXT,
    )


def sms_step_up(index: int) -> CallPlan:
    """Account number, PIN, 2 (card), 1 (text me a code), hold, the code from the outbox.

    Calls from a number on file for nobody: the code goes to the phone on file, not the caller.
    """
    who = customer(index)
    return CallPlan(
        "sms step-up",
        who,
        unlisted_number(index),
        (
            Keys(who.account + "#"),
            Keys("1"),
            Keys(who.pin + "#"),
            Keys("2"),
            RequestCode(Keys("1")),
            CodeFromOutbox(who.phone),
        ),
        "enqueued",
        expect_queue="card-services",
    )


MIX: tuple[Callable[[int], CallPlan], ...] = (
    pin_success,
    passcode_success,
    two_failures,
    sms_step_up,
)


#: The scripts by the name `--mix` gives them.
SCRIPTS: dict[str, Callable[[int], CallPlan]] = {
    "pin": pin_success,
    "passcode": passcode_success,
    "failures": two_failures,
    "sms": sms_step_up,
}


def parse_mix(text: str) -> tuple[Callable[[int], CallPlan], ...]:
    """`pin=1,sms=3`: the scripts in those proportions, in round-robin order.

    Raises:
        ValueError: an unknown script name or a weight that is not a whole number from 0 to 20.
    """
    weights: dict[str, int] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in SCRIPTS or not weight.isdigit() or int(weight) > 20:
            raise ValueError(
                f"{part.strip()!r}: write NAME=WEIGHT, NAME one of {', '.join(SCRIPTS)}"
            )
        weights[name] = int(weight)
    mix = [SCRIPTS[name] for name, weight in weights.items() for _ in range(weight)]
    if not mix:
        raise ValueError("every weight is 0: give at least one script a weight")
    return tuple(mix)


def plan_calls(
    count: int, first: int = 0, mix: Sequence[Callable[[int], CallPlan]] = MIX
) -> list[CallPlan]:
    """Round-robin over the mix; a longer plan starts with a shorter one."""
    return [mix[i % len(mix)](i) for i in range(first, first + count)]


def calls_within(plans: Sequence[CallPlan], texts: int) -> int:
    """How many of `plans`, from the first, send at most `texts` texts between them."""
    sent = 0
    for index, plan in enumerate(plans):
        sent += plan.texts
        if sent > texts:
            return index
    return len(plans)


def seed_customers(redis: Redis, hasher: SecretHasher, plans: Sequence[CallPlan]) -> None:
    """Enrol every plan's customer. The template's secrets are hashed once, not per customer:
    argon2 at production cost takes tens of milliseconds, and verifying is what is measured."""
    record = customer_record(TEMPLATE, hasher)
    directory = RedisCustomerDirectory(redis)
    for plan in plans:
        who = plan.customer
        directory.add(replace(record, account=who.account, phone=who.phone, email=who.email))


def check_flow(flow: Flow) -> None:
    """The scripts follow flows/default.yaml: fail fast, not with N failed calls, if it moved."""
    step = flow.steps.get(SMS_CODE_STEP)
    if not (isinstance(step, AuthenticateStep) and step.method == "sms_otp"):
        raise RuntimeError(
            f"flow {FLOW_NAME!r} has no sms_otp step {SMS_CODE_STEP!r}; update the call scripts"
        )
