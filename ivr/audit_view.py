"""What `ivr audit` shows: which events match, and how they read as a table or JSON lines.

Pure (no Redis, no click), so the filters and the layout are tested on plain dictionaries. An
event is a stream entry as `ivr.store.audit.AuditLog` wrote it, with its stream id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

Event = tuple[str, dict[str, str]]  # (stream id, fields)

_DURATION = re.compile(r"([0-9]{1,6})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
# Shown in the detail column, in this order, as key=value; `detail` itself goes last, bare.
_EXTRA = ("queue", "assurance", "agent", "role", "ref")
_WHO = ("caller", "account")  # shown when they change within a call, not on every line


def parse_since(text: str) -> int:
    """Seconds in `30s`, `30m`, `1h` or `2d`; ValueError names what is accepted."""
    found = _DURATION.fullmatch(text.strip())
    if found is None or int(found[1]) == 0:
        raise ValueError(f"--since: {text!r} is not a duration; use e.g. 90s, 30m, 1h or 2d")
    return int(found[1]) * _UNITS[found[2]]


@dataclass(frozen=True)
class Query:
    """Which events to show: those of one call, of one claim id, or all."""

    call_sid: str | None = None
    account: str | None = None

    def __post_init__(self) -> None:
        if self.call_sid is not None and not CALL_SID.fullmatch(self.call_sid):
            raise ValueError(f"CALL: {self.call_sid!r} is not a call SID (CA and 32 hex digits)")
        if self.account is not None and not self.account.strip():
            raise ValueError("--account: empty; give an account number or an unmatched-... id")

    def __call__(self, fields: dict[str, str]) -> bool:
        if self.call_sid is not None and fields.get("call_sid") != self.call_sid:
            return False
        return self.account is None or fields.get("account") == self.account


def json_lines(events: Iterable[Event]) -> list[str]:
    """One JSON object per event, the stream's fields and its `id`."""
    return [
        json.dumps({"id": event_id, **fields}, separators=(",", ":")) for event_id, fields in events
    ]


def table(events: Iterable[Event], *, with_call: bool) -> list[str]:
    """Aligned rows, oldest first: time (UTC), the call if asked, event, method, outcome and
    the rest in `detail`."""
    header = [
        "time (UTC)",
        *(["call"] if with_call else []),
        "event",
        "method",
        "outcome",
        "detail",
    ]
    rows = [header]
    seen: dict[str, dict[str, str]] = {}
    for event_id, fields in events:
        call = fields.get("call_sid", "")
        known = seen.setdefault(call, {})
        detail = []
        for name in _WHO:
            value = fields.get(name)
            if value and (not call or known.get(name) != value):
                detail.append(f"{name}={value}")
                known[name] = value
        detail += [f"{name}={fields[name]}" for name in _EXTRA if fields.get(name)]
        if fields.get("detail"):
            detail.append(fields["detail"])
        rows.append(
            [
                _time(event_id, fields),
                *([call or "-"] if with_call else []),
                fields.get("event", "?"),
                fields.get("method", ""),
                fields.get("outcome", ""),
                " ".join(detail),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]
        ).rstrip()
        for row in rows
    ]


def _time(event_id: str, fields: dict[str, str]) -> str:
    try:
        at = float(fields["at"])
    except (KeyError, ValueError):
        at = int(event_id.split("-", 1)[0]) / 1000  # the stream id's milliseconds
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
