"""Agent tokens: who may read a call through the agent API, and in which role.

A token is `secrets.token_urlsafe(32)` (256 random bits), shown once when it is made and kept
only as its SHA-256 digest. A plain digest, not a keyed one, on purpose: a 256-bit random token
cannot be guessed from its digest, so a key would add nothing, and leaving it out keeps tokens
working across a change of IVR_CODE_KEY and lets `ivr agents` run without any server secret.
Slow hashes (argon2) are for low-entropy secrets such as PINs; a token needs none.

The token's digest indexes the agent (one lookup per read); the digest stored with the agent is
then compared in constant time, so an index left behind by anything but `rotate` and `remove`
(which replace or delete it in the same transaction) admits nobody.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline

from ivr.errors import AgentError
from ivr.store import keys

NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
ROLE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}")  # token_urlsafe(32) is 43 characters
TOKEN_BYTES = 32


@dataclass(frozen=True)
class Agent:
    name: str
    role: str
    created: float


def validate_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise AgentError(
            f"agent name {name!r}: use 1 to 64 lower-case letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    return name


def validate_role(role: str) -> str:
    if not ROLE.fullmatch(role):
        raise AgentError(f"role {role!r}: use lower-case letters, digits, _ and -")
    return role


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AgentDirectory:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def add(self, name: str, role: str) -> str:
        """A new agent; returns its token, which is stored nowhere."""
        validate_name(name)
        validate_role(role)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        key = keys.agent(name)

        def write(pipe: Pipeline) -> None:
            if pipe.exists(key):
                raise AgentError(f"agent {name} already exists; use `ivr agents rotate {name}`")
            pipe.multi()
            pipe.hset(key, mapping={"role": role, "created": f"{time.time():.0f}"})
            self._link(pipe, name, token)
            pipe.sadd(keys.AGENTS, name)

        self.redis.transaction(write, key)
        return token

    def rotate(self, name: str) -> str:
        """A new token for `name`; the old one stops working in the same transaction."""
        key = keys.agent(name)
        token = secrets.token_urlsafe(TOKEN_BYTES)

        def write(pipe: Pipeline) -> None:
            old = pipe.hget(key, "token")
            if old is None:
                raise AgentError(f"no agent named {name}")
            pipe.multi()
            pipe.delete(keys.agent_token(old.decode()))
            self._link(pipe, name, token)

        self.redis.transaction(write, key)
        return token

    def remove(self, name: str) -> None:
        key = keys.agent(name)

        def write(pipe: Pipeline) -> None:
            old = pipe.hget(key, "token")
            if old is None:
                raise AgentError(f"no agent named {name}")
            pipe.multi()
            pipe.delete(keys.agent_token(old.decode()), key)
            pipe.srem(keys.AGENTS, name)

        self.redis.transaction(write, key)

    def get(self, name: str) -> Agent | None:
        raw = self.redis.hgetall(keys.agent(name))
        if b"role" not in raw:
            return None
        return Agent(name, raw[b"role"].decode(), float(raw.get(b"created", b"0")))

    def all(self) -> list[Agent]:
        names = sorted(n.decode() for n in self.redis.smembers(keys.AGENTS))
        return [agent for agent in map(self.get, names) if agent is not None]

    def authenticate(self, token: str) -> Agent | None:
        """The agent holding `token`, or None: malformed, unknown, rotated or removed."""
        if not TOKEN.fullmatch(token):
            return None
        given = digest(token)
        name = self.redis.get(keys.agent_token(given))
        if name is None:
            return None
        raw = self.redis.hgetall(keys.agent(name.decode()))
        stored = raw.get(b"token")
        if stored is None or b"role" not in raw or not hmac.compare_digest(stored, given.encode()):
            return None
        return Agent(name.decode(), raw[b"role"].decode(), float(raw.get(b"created", b"0")))

    @staticmethod
    def _link(pipe: Pipeline, name: str, token: str) -> None:
        hashed = digest(token)
        pipe.hset(keys.agent(name), "token", hashed)
        pipe.set(keys.agent_token(hashed), name)
