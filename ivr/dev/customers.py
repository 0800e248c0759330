"""The demo customers and agents `ivr dev` seeds, and how a demo or scenario customer becomes
a directory record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis import Redis

from ivr.auth.knowledge import SecretHasher, enrol
from ivr.store.customers import Customer, RedisCustomerDirectory

if TYPE_CHECKING:
    from ivr.flows.scenarios import Customer as ScenarioCustomer


@dataclass(frozen=True)
class DemoCustomer:
    account: str
    phone: str
    pin: str
    passcode: str
    name: str
    email: str
    address: str


DEMO_CUSTOMERS = (
    DemoCustomer(
        "12345678",
        "+15005550006",
        "583920",
        "purple elephant 42",
        "Ada Lovelace",
        "ada@example.com",
        "12 Analytical Row, London",
    ),
    DemoCustomer(
        "87654321",
        "+15005550007",
        "739154",
        "green river seventeen",
        "Alan Turing",
        "alan@example.com",
        "1 Bletchley Park, Milton Keynes",
    ),
)


def customer_record(demo: DemoCustomer | ScenarioCustomer, hasher: SecretHasher) -> Customer:
    """The directory record of `demo` (or of a scenario file's customer, which has the same
    fields), secrets enrolled as a real customer's would be."""
    return Customer(
        account=demo.account,
        phone=demo.phone,
        email=demo.email,
        name=demo.name,
        address=demo.address,
        pin_hash=enrol(hasher, "pin", demo.pin),
        passcode_hash=enrol(hasher, "passcode", demo.passcode),
    )


def seed_demo_customers(redis: Redis, hasher: SecretHasher) -> list[DemoCustomer]:
    directory = RedisCustomerDirectory(redis)
    added = []
    for demo in DEMO_CUSTOMERS:
        if directory.get(demo.account) is None:
            directory.add(customer_record(demo, hasher))
            added.append(demo)
    return added


#: One demo agent per role of the shipped policy (flows/agents.yaml), for the screen pop.
DEMO_AGENTS = {
    "agent": "demo-agent",
    "specialist": "demo-specialist",
    "supervisor": "demo-supervisor",
}


def seed_demo_agents(redis: Redis) -> dict[str, str]:
    """A fresh token for each demo agent, by role: tokens rest only as digests, so a restart
    cannot show the old ones again; it rotates them instead."""
    from ivr.store.agents import AgentDirectory

    directory = AgentDirectory(redis)
    return {
        role: directory.rotate(name) if directory.get(name) else directory.add(name, role)
        for role, name in DEMO_AGENTS.items()
    }
