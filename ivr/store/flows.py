"""Published versions of call flows, by content hash, and which one is live.

A version is the canonical JSON of the parsed model, so an edit to a file's comments or
whitespace is the same version. Versions are never changed or removed: a call keeps the version
it started with until it ends, and any version can be made live again. Whether a flow may be
published (its checks, its scenario tests) is `ivr.flows.publish`'s business; this module only
stores what it is given and refuses a version whose stored text no longer matches its hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis

from ivr.errors import IvrError
from ivr.flows.schema import Flow
from ivr.store import keys

log = logging.getLogger(__name__)
SHORT = 12  # characters of a hash shown to people, and the shortest prefix they may type
MIN_PREFIX = 6


def canonical(flow: Flow) -> str:
    return json.dumps(flow.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def flow_hash(flow: Flow) -> str:
    return hashlib.sha256(canonical(flow).encode("utf-8")).hexdigest()


class CorruptVersion(IvrError):
    """A stored version that does not parse as a flow, or whose text does not match its hash."""


@dataclass(frozen=True)
class Version:
    digest: str
    published_at: float  # epoch s of its first publish
    live: bool

    @property
    def short(self) -> str:
        return self.digest[:SHORT]


class FlowVersions:
    def __init__(self, redis: Redis, name: str) -> None:
        self.redis, self.name = redis, name

    def publish(self, flow: Flow, at: float | None = None) -> tuple[str, bool]:
        """Store `flow` (once) and make it live; its hash, and whether it is a new version."""
        digest = flow_hash(flow)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.flow_version(self.name, digest), canonical(flow), nx=True)
            pipe.zadd(keys.flow_versions(self.name), {digest: at or time.time()}, nx=True)
            pipe.set(keys.flow_live(self.name), digest)
            new = bool(pipe.execute()[0])
        return digest, new

    def live(self) -> str | None:
        raw = self.redis.get(keys.flow_live(self.name))
        return raw.decode() if raw else None

    def get(self, digest: str) -> Flow | None:
        """The version `digest`; None if it was never published. Raises CorruptVersion."""
        raw = self.redis.get(keys.flow_version(self.name, digest))
        if raw is None:
            return None
        try:
            flow = Flow.model_validate_json(raw)
        except ValueError:
            raise CorruptVersion(
                f"flow {self.name} version {digest[:SHORT]} does not parse"
            ) from None
        if flow_hash(flow) != digest:
            raise CorruptVersion(f"flow {self.name} version {digest[:SHORT]} does not match")
        return flow

    def versions(self) -> list[Version]:
        """Oldest first."""
        live = self.live()
        rows = self.redis.zrange(keys.flow_versions(self.name), 0, -1, withscores=True)
        return [Version(d.decode(), at, d.decode() == live) for d, at in rows]

    def resolve(self, ref: str) -> str:
        """The full hash a person means by `ref` (a hash or a unique prefix of one)."""
        if len(ref) < MIN_PREFIX:
            raise IvrError(f"version {ref!r}: give at least {MIN_PREFIX} characters of its hash")
        found = [v.digest for v in self.versions() if v.digest.startswith(ref.lower())]
        if len(found) != 1:
            how = "matches no" if not found else "matches more than one"
            raise IvrError(f"version {ref!r} {how} published version of flow {self.name}")
        return found[0]

    def rollback(self, ref: str | None = None) -> str:
        """Make `ref` live again, by default the version published just before the live one;
        the hash now live. A version that no longer loads is refused."""
        digests = [v.digest for v in self.versions()]
        if ref is not None:
            target = self.resolve(ref)
        else:
            live = self.live()
            at = digests.index(live) if live in digests else len(digests)
            if at < 1:
                raise IvrError(f"flow {self.name} has no version before the live one")
            target = digests[at - 1]
        self.get(target)  # raises CorruptVersion: a broken version is never made live
        self.redis.set(keys.flow_live(self.name), target)
        return target


Check = Callable[[Flow], None]  # raises when this service must not serve the flow


class ServedFlow:
    """Which version of a flow a web process serves, checked with one GET per new call.

    Versions are parsed (and checked with `check`) once per process, then kept by hash. The
    file the service started with is the version served while none is published, and the
    last good one if the live version cannot be loaded: that is logged once per bad hash,
    and no caller hears anything of it.
    """

    def __init__(
        self, redis: Redis, name: str, file_flow: Flow, check: Check, keep: int = 16
    ) -> None:
        self.versions = FlowVersions(redis, name)
        self.file_hash = flow_hash(file_flow)
        self._check, self._keep = check, keep
        self._cache: OrderedDict[str, Flow] = OrderedDict({self.file_hash: file_flow})
        self._bad: set[str] = set()
        self._good = self.file_hash

    def current(self) -> tuple[str, Flow]:
        """The version a new call starts on."""
        live = self.versions.live()
        if live is not None and self._load(live) is not None:
            self._good = live
        return self._good, self._cache[self._good]

    def pinned(self, digest: str) -> tuple[str, Flow]:
        """The version a call in progress started on ("" for a call that predates versions,
        which started on the file)."""
        flow = self._load(digest) if digest else self._cache[self.file_hash]
        return (digest or self.file_hash, flow) if flow else self.current()

    def _load(self, digest: str) -> Flow | None:
        flow = self._cache.get(digest)
        if flow is not None:
            self._cache.move_to_end(digest)
            return flow
        if digest in self._bad:
            return None
        try:
            flow = self.versions.get(digest)
            if flow is None:
                raise CorruptVersion(f"flow version {digest[:SHORT]} is not in Redis")
            self._check(flow)
        except IvrError as exc:
            self._bad.add(digest)
            log.error("flow version %s not served (%s); serving %s", digest[:SHORT], exc,
                      self._good[:SHORT])  # fmt: skip
            return None
        self._cache[digest] = flow
        spare = (self.file_hash, self._good, digest)
        excess = len(self._cache) - self._keep
        for old in [d for d in self._cache if d not in spare][: max(0, excess)]:
            del self._cache[old]
        return flow
