"""The customer directory: who owns which account number, phone and secrets.

Behind a small protocol so a deployment can put its CRM there instead of Redis. Secrets are
stored only as hashes made by the caller of `set_secret`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Protocol

from redis import Redis

from ivr.assurance import METHODS
from ivr.errors import CustomerError
from ivr.store import keys

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
ACCOUNT = re.compile(r"[0-9]{6,12}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PROFILE_FIELDS = ("phone", "email", "name", "address")
SECRET_FIELDS = ("pin_hash", "passcode_hash")


@dataclass(frozen=True)
class Customer:
    account: str
    phone: str
    email: str | None = None
    name: str | None = None
    address: str | None = None
    pin_hash: str | None = None
    passcode_hash: str | None = None

    def secret_hash(self, method: str) -> str | None:
        return {"pin": self.pin_hash, "passcode": self.passcode_hash}.get(method)


class CustomerDirectory(Protocol):
    def get(self, account: str) -> Customer | None: ...

    def accounts_for_phone(self, phone: str) -> list[str]: ...


def validate_account(account: str) -> str:
    if not ACCOUNT.fullmatch(account):
        raise CustomerError(
            f"account number {account!r} must be 6 to 12 digits (the caller keys it in)"
        )
    return account


def validate_phone(phone: str) -> str:
    if not E164.fullmatch(phone):
        raise CustomerError(f"phone {phone!r} is not in E.164 form; write it like +14155550100")
    return phone


def validate_email(email: str) -> str:
    if not EMAIL.fullmatch(email):
        raise CustomerError(f"email {email!r} is not an email address")
    return email


class RedisCustomerDirectory:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def get(self, account: str) -> Customer | None:
        if not ACCOUNT.fullmatch(account or ""):
            return None
        raw = self.redis.hgetall(keys.customer(account))
        if not raw:
            return None
        values = {k.decode(): v.decode() for k, v in raw.items()}
        known = {f.name for f in fields(Customer)}
        return Customer(account=account, **{k: v for k, v in values.items() if k in known})

    def accounts_for_phone(self, phone: str) -> list[str]:
        return sorted(m.decode() for m in self.redis.smembers(keys.phone(phone)))

    def add(self, customer: Customer) -> None:
        validate_account(customer.account)
        validate_phone(customer.phone)
        if customer.email:
            validate_email(customer.email)
        key = keys.customer(customer.account)
        mapping = {
            f.name: getattr(customer, f.name)
            for f in fields(Customer)
            if f.name != "account" and getattr(customer, f.name) is not None
        }
        pipe = self.redis.pipeline()
        pipe.hsetnx(key, "phone", customer.phone)
        created = pipe.execute()[0]
        if not created:
            raise CustomerError(
                f"account {customer.account} already exists; use `ivr customers set`"
            )
        pipe.hset(key, mapping=mapping)
        pipe.sadd(keys.phone(customer.phone), customer.account)
        pipe.execute()

    def update(self, account: str, **changes: str | None) -> Customer:
        """Change profile fields or secret hashes; None removes a field."""
        current = self._existing(account)
        unknown = set(changes) - set(PROFILE_FIELDS) - set(SECRET_FIELDS)
        if unknown:
            raise CustomerError(f"cannot change {', '.join(sorted(unknown))}")
        if changes.get("phone") is None and "phone" in changes:
            raise CustomerError("a customer needs a phone number on file")
        if changes.get("phone"):
            validate_phone(changes["phone"])  # type: ignore[arg-type]
        if changes.get("email"):
            validate_email(changes["email"])  # type: ignore[arg-type]
        key = keys.customer(account)
        pipe = self.redis.pipeline()
        for name, value in changes.items():
            if value is None:
                pipe.hdel(key, name)
            else:
                pipe.hset(key, name, value)
        if changes.get("phone") and changes["phone"] != current.phone:
            pipe.srem(keys.phone(current.phone), account)
            pipe.sadd(keys.phone(changes["phone"]), account)  # type: ignore[arg-type]
        pipe.execute()
        return self._existing(account)

    def remove(self, account: str) -> None:
        current = self._existing(account)
        pipe = self.redis.pipeline()
        pipe.delete(keys.customer(account))
        pipe.srem(keys.phone(current.phone), account)
        pipe.delete(*(keys.failures(account, m) for m in METHODS))
        pipe.execute()

    def _existing(self, account: str) -> Customer:
        customer = self.get(account)
        if customer is None:
            raise CustomerError(f"no customer with account number {account}")
        return customer
