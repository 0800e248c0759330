"""The audit trail: who tried which method, with what outcome, when. Never the secret.

Each event is one entry in the Redis stream `ivr:audit` (what `ivr audit` reads) and, with the
same fields, one JSON object per line on the logger `ivr.audit`, so the trail also reaches
whatever collects the process logs when Redis is trimmed or gone. Logs travel further than the
stream, so the line masks the two personal values the stream holds in full: the calling number
(its last four digits) and a matched account number (all but its last four).

A webhook's events are one logical step with the call's save: inside `batched` they are logged
at once but written to the stream with the save, in its round trip (`AuditBatch.write`), or in
one round trip of their own at the end if nothing saved them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from redis import Redis
from redis.client import Pipeline

from ivr.auth.claims import UNMATCHED_PREFIX
from ivr.flows.engine import CallState
from ivr.store import event_counts, keys

MAX_EVENTS = 100_000
FIELDS = frozenset(
    {
        "event",
        "call_sid",
        "account",
        "caller",
        "method",
        "outcome",
        "detail",
        "queue",
        "assurance",
        "agent",
        "role",
        "ref",
    }
)
LOGGER = "ivr.audit"
_SHOWN = 4  # digits of a number or account a log line keeps
_READ_BATCH = 500

log = logging.getLogger(LOGGER)


class _StderrLines(logging.Handler):
    """Each record's message alone on a line of stderr: a JSON object, with no prefix that would
    make the line something a log collector cannot parse.

    It looks up `sys.stderr` at each line, as `logging.lastResort` does, so a stream swapped
    after start-up (a test runner's capture, a daemonised process) is the one written to."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # pragma: no cover - logging must never break a call
            self.handleError(record)


def _json_lines() -> None:
    """Give `ivr.audit` its own handler, once per process.

    gunicorn and rq configure only their own loggers, so an INFO record of ours would reach no
    handler there; and a line behind another handler's "[time] [pid] [INFO]" prefix is not JSON.
    """
    if not any(isinstance(h, _StderrLines) for h in log.handlers):
        log.addHandler(_StderrLines())
        log.setLevel(logging.INFO)
        log.propagate = False


def log_line(entry: dict[str, str]) -> str:
    """The JSON line of a stream entry: the same fields, the personal values masked."""
    line = dict(entry)
    if line.get("caller"):
        line["caller"] = _masked_tail(line["caller"])
    account = line.get("account", "")
    if account and not account.startswith(UNMATCHED_PREFIX):
        line["account"] = "*" * max(len(account) - _SHOWN, 0) + account[-_SHOWN:]
    return json.dumps(line, separators=(",", ":"))


def _masked_tail(value: str) -> str:
    """Enough of a number to spot a range (country, area), not enough to dial it: its last
    four digits hidden, wherever they are (`+1415555****`, `sip:+1415555****@pbx`)."""
    digits = [i for i, c in enumerate(value) if c.isdigit()][-_SHOWN:]
    return "".join("*" if i in digits else c for i, c in enumerate(value))


class AuditBatch:
    """The events of one webhook not yet in the stream, oldest first."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.entries: list[dict[str, str]] = []

    def write(self, pipe: Pipeline) -> None:
        """Queue the events on `pipe` (the caller executes it), in the order they happened."""
        for entry in self.entries:
            _queue(pipe, entry)
        self.entries = []

    def flush(self) -> None:
        if self.entries:
            with self.redis.pipeline(transaction=False) as pipe:
                self.write(pipe)
                pipe.execute()


def _queue(pipe: Pipeline, entry: dict[str, str]) -> None:
    """One event on `pipe`: the stream entry and the metrics' counter (ivr.store.event_counts)."""
    pipe.xadd(keys.AUDIT, entry, maxlen=MAX_EVENTS, approximate=True)
    event_counts.count(pipe, entry)


_batch: ContextVar[AuditBatch | None] = ContextVar("ivr_audit_batch", default=None)


class AuditLog:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        _json_lines()

    @contextmanager
    def batched(self) -> Iterator[AuditBatch]:
        """Events recorded meanwhile (in this thread, on this Redis) wait in the batch for the
        caller to write them with its own pipeline; what is left is written on the way out."""
        batch = AuditBatch(self.redis)
        token = _batch.set(batch)
        try:
            yield batch
        finally:
            _batch.reset(token)
            batch.flush()

    def record(self, event: str, **fields: str | None) -> None:
        unknown = set(fields) - FIELDS
        if unknown:
            # A closed field list keeps a careless caller from auditing a PIN "for debugging".
            raise ValueError(f"audit fields not allowed: {sorted(unknown)}")
        entry = {"event": event, "at": f"{time.time():.3f}"}
        entry.update({k: v for k, v in fields.items() if v is not None})
        batch = _batch.get()
        if batch is not None and batch.redis is self.redis:
            batch.entries.append(entry)
        else:
            with self.redis.pipeline(transaction=False) as pipe:
                _queue(pipe, entry)
                pipe.execute()
        if log.isEnabledFor(logging.INFO):
            log.info(log_line(entry))

    def attempt(
        self, event: str, state: CallState, method: str, outcome: str, detail: str | None = None
    ) -> None:
        """An authentication or delivery event of a call: who, which method, what happened."""
        self.of_call(event, state, method=method, outcome=outcome, detail=detail)

    def of_call(self, event: str, state: CallState, **fields: str | None) -> None:
        """An event of the call in `state`, under its claim.

        `account` is the call's claim id: a matched account's number, or the keyed digest that
        stands for digits matching none, never those digits themselves (SECURITY 23).
        """
        self.record(
            event,
            call_sid=state.call_sid,
            account=state.account or "",
            caller=state.caller,
            **fields,
        )

    def recent(self, count: int = 50) -> list[dict[str, Any]]:
        return [
            {k.decode(): v.decode() for k, v in values.items()}
            for _, values in self.redis.xrevrange(keys.AUDIT, count=count)
        ]

    def search(
        self,
        wanted: Callable[[dict[str, str]], bool],
        *,
        since: float | None = None,
        limit: int,
    ) -> list[tuple[str, dict[str, str]]]:
        """The newest `limit` events `wanted` accepts, at or after epoch `since`, oldest first,
        each with its stream id."""
        found: list[tuple[str, dict[str, str]]] = []
        for entry_id, entry in self._newest_first(since):
            if wanted(entry):
                found.append((entry_id, entry))
                if len(found) >= limit:
                    break
        return found[::-1]

    def _newest_first(self, since: float | None) -> Iterator[tuple[str, dict[str, str]]]:
        # Stream ids begin with the epoch milliseconds of the XADD, so `since` is an id range.
        low = f"{int(since * 1000)}-0" if since is not None else "-"
        high = "+"
        while True:
            batch = self.redis.xrevrange(keys.AUDIT, max=high, min=low, count=_READ_BATCH)
            for raw_id, values in batch:
                yield raw_id.decode(), {k.decode(): v.decode() for k, v in values.items()}
            if len(batch) < _READ_BATCH:
                return
            high = "(" + batch[-1][0].decode()
