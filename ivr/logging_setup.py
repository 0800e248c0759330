"""Log lines as one JSON object each (`IVR_LOG_FORMAT=json`), for the web, the worker and the CLI.

Each line holds `time` (UTC, ISO 8601), `level`, `logger`, `message` and, when the line is about
a call, its `call_sid`: read from the webhook's signed parameters in a request, or from the job
in an rq work horse (our jobs take the call SID first), and only when it has a CallSid's shape.
Nothing else of the request or the job is added: no phone numbers, PINs, codes or transcripts.
Our own messages never carry them; an exception's message might (it can quote an input), so
an exception is logged as its type and frames only. The twilio library logs every API
request's parameters at INFO (an SMS's body holds its code, `To` its number): its HTTP logger
is held at WARNING.

`ivr.audit` keeps its own handler (ivr.store.audit): its lines are already JSON objects, the
audit fields with the personal values masked. With the default `text`, nothing here runs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
#: Loggers that write personal data at INFO, held at WARNING.
QUIET = ("twilio.http_client",)


def configure(log_format: str) -> None:
    """Send every record through one JSON handler on the root logger; once per process."""
    if log_format != "json":
        return
    root = logging.getLogger()
    if not any(isinstance(h, JsonHandler) for h in root.handlers):
        root.addHandler(JsonHandler())
    root.setLevel(logging.INFO)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def gunicorn_logconfig() -> dict[str, Any]:
    """gunicorn's `logconfig_dict` for JSON lines: its loggers hand their records to the root
    logger's JSON handler (the one `configure` then finds in each worker)."""
    return {
        "root": {"level": "INFO", "handlers": ["json"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
            **{name: {"level": "WARNING"} for name in QUIET},
        },
        "handlers": {"json": {"()": JsonHandler}},
        "formatters": {},
    }


class JsonHandler(logging.Handler):
    """One JSON object a line on stderr, looked up at each line (as `logging.lastResort` does),
    so a stream swapped after start-up is the one written to."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonLines())
        self.addFilter(CallSidFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # pragma: no cover - logging must never break a call
            self.handleError(record)


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_sid = getattr(record, "call_sid", None)
        if call_sid:
            line["call_sid"] = call_sid
        if record.exc_info and record.exc_info[0] is not None:
            kind, _, tb = record.exc_info
            line["exception"] = kind.__name__
            line["traceback"] = "".join(traceback.format_tb(tb))
        return json.dumps(line, ensure_ascii=False)


class CallSidFilter(logging.Filter):
    """Adds `call_sid` to a record made while a webhook or a job of a call is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "call_sid", None):
            sid = _call_sid()
            if sid:
                record.call_sid = sid
        return True


def _call_sid() -> str | None:
    from flask import g, has_request_context

    if has_request_context():
        params = g.get("twilio_params") or {}  # set only once the signature was checked
        sid = params.get("CallSid", "")
    else:
        from rq import get_current_job

        job = get_current_job()
        sid = job.args[0] if job is not None and job.args else ""
    return sid if isinstance(sid, str) and CALL_SID.fullmatch(sid) else None
