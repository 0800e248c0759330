"""`ivr customers`: the customer directory, with secrets stored only as hashes."""

from __future__ import annotations

from typing import Any

import click

from ivr.assurance import METHODS
from ivr.cli import _redis, _settings, cli
from ivr.errors import IvrError


@cli.group()
def customers() -> None:
    """Manage the customer directory in REDIS_URL."""


def _secret_options(fn: Any) -> Any:
    fn = click.option("--passcode", help="Spoken passcode; '-' to type it hidden.")(fn)
    return click.option("--pin", help="Keypad PIN; '-' to type it hidden.")(fn)


def _hashed_secrets(pin: str | None, passcode: str | None) -> dict[str, str]:
    from ivr.auth.knowledge import enrol
    from ivr.runtime import make_hasher

    settings = _settings()
    hasher = make_hasher(settings)
    out = {}
    for method, value in (("pin", pin), ("passcode", passcode)):
        if value is not None:
            secret = _maybe_prompt(value, method.capitalize())
            out[f"{method}_hash"] = enrol(
                hasher, method, secret, pin_min_length=settings.pin_min_length
            )
    return out


def _factors(hashes: dict[str, str]) -> str:
    names = [k.removesuffix("_hash") for k in hashes]
    return f" with {' and '.join(names)}" if names else " (no PIN or passcode yet)"


def _maybe_prompt(value: str, label: str) -> str:
    if value != "-":
        return value
    return click.prompt(label, hide_input=True, confirmation_prompt=True)


@customers.command("add")
@click.argument("account")
@click.option("--phone", required=True, help="Phone number on file, E.164 (+14155550100).")
@_secret_options
@click.option("--email")
@click.option("--name")
@click.option("--address")
def customers_add(
    account: str,
    phone: str,
    pin: str | None,
    passcode: str | None,
    email: str | None,
    name: str | None,
    address: str | None,
) -> None:
    """Add a customer; ACCOUNT is the number a caller keys in."""
    from ivr.store.customers import Customer, RedisCustomerDirectory

    hashes = _hashed_secrets(pin, passcode)
    RedisCustomerDirectory(_redis()).add(
        Customer(account=account, phone=phone, email=email, name=name, address=address, **hashes)
    )
    click.echo(f"added {account}" + _factors(hashes))


@customers.command("set")
@click.argument("account")
@click.option("--phone")
@_secret_options
@click.option("--email")
@click.option("--name")
@click.option("--address")
def customers_set(account: str, **options: str | None) -> None:
    """Change a customer's profile or secrets."""
    from ivr.store.customers import RedisCustomerDirectory

    hashes = _hashed_secrets(options.pop("pin"), options.pop("passcode"))
    changes = {k: v for k, v in options.items() if v is not None} | hashes
    if not changes:
        raise IvrError("nothing to change; give at least one option")
    RedisCustomerDirectory(_redis()).update(account, **changes)
    click.echo(f"updated {account}: {', '.join(sorted(k.removesuffix('_hash') for k in changes))}")


@customers.command("reset")
@click.argument("account")
@click.option("--method", type=click.Choice([*METHODS, "all"]), default="all", show_default=True)
def customers_reset(account: str, method: str) -> None:
    """Clear a locked factor's failure count (after the customer proved who they are)."""
    from ivr.store.counters import FailureCounter

    client = _redis()
    _known_customer(client, account)
    counter = FailureCounter(client)
    for name in METHODS if method == "all" else (method,):
        counter.reset(account, name)
    click.echo(f"reset {method} failures for {account}")


@customers.command("remove")
@click.argument("account")
def customers_remove(account: str) -> None:
    """Remove a customer and their secrets."""
    from ivr.store.customers import RedisCustomerDirectory

    RedisCustomerDirectory(_redis()).remove(account)
    click.echo(f"removed {account}")


@customers.command("show")
@click.argument("account")
def customers_show(account: str) -> None:
    """Show a customer's record; secrets only as set / not set."""
    from ivr.store.counters import FailureCounter

    client = _redis()
    customer = _known_customer(client, account)
    counter = FailureCounter(client)
    for field in ("account", "phone", "email", "name", "address"):
        click.echo(f"{field:12} {getattr(customer, field) or '-'}")
    for method in METHODS:
        failures = counter.count(account, method)
        if method in ("pin", "passcode"):
            state = "set" if customer.secret_hash(method) else "not set"
            click.echo(f"{method:12} {state}, {failures} consecutive failures")
        elif failures:
            click.echo(f"{method:12} {failures} consecutive failures")


def _known_customer(client: Any, account: str) -> Any:
    from ivr.store.customers import RedisCustomerDirectory

    customer = RedisCustomerDirectory(client).get(account)
    if customer is None:
        raise IvrError(f"no customer with account number {account}")
    return customer
