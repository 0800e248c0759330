"""The browser phone, `/dev/phone`: play a call from a web page, then save it as a scenario test.

Registered only with IVR_DEV_PHONE, which `ivr dev` alone sets: anywhere else the page and its
API do not exist (404).

The browser never holds the auth token. It sends what the caller does; the server signs each
webhook as Twilio would (the simulator, ivr.simulator.stepper) and plays it against this very app
in process, so a sync worker never waits on another worker that may be busy.

Between two answers the call's state travels with the browser, not in a process or in Redis:
gunicorn runs several workers that share nothing but Redis, so a call cannot wait in one
worker's memory for the next click; and the state is what the caller keyed and said (PINs,
passcodes, codes), which this project never rests in Redis. So every answer hands the whole call
(ivr.simulator.phone_call.PhoneCall: the TwiML it waits at, the scenario it records) back to the
page, signed with itsdangerous under the service's auth token, and the next request brings it
back. A state the page made up or altered is refused, so the page cannot make the server sign a
request the server did not play itself; it expires with IVR_SESSION_TTL.

The API takes JSON only: a page of another site cannot send `application/json` here without a
CORS preflight this app never answers, so it cannot drive calls or write files; the Host header
is checked as on every route. Bad input gets a 4xx with `{"error": ...}`, never a 500.
"""

from __future__ import annotations

import math
import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException

from ivr.flows.recorder import RecordingError, save_scenario, scenario_document, shown_path
from ivr.outbox import Outbox
from ivr.runtime import runtime
from ivr.simulator import Keys, Speech, TwimlError, WsgiTransport
from ivr.simulator import phone_call as phone
from ivr.simulator.phone_call import Line, PhoneCall, PhoneError
from ivr.simulator.stepper import Step
from ivr.web.agent_page import content_security_policy

bp = Blueprint(
    "dev_phone",
    __name__,
    url_prefix="/dev/phone",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

SALT = "ivr.web.dev_phone.call"
CALLED_NUMBER = "+15005550001"  # the service's number the phone dials, as `ivr call --to`
CALLER = re.compile(r"^(\+[1-9][0-9]{6,14}|anonymous)$")
VERSTAT = re.compile(r"^[A-Za-z0-9-]{1,64}$")
#: What Twilio puts in StirVerstat (README, "Risk signals"); the page offers these.
VERSTATS = (
    "TN-Validation-Passed-A",
    "TN-Validation-Passed-B",
    "TN-Validation-Passed-C",
    "TN-Validation-Failed",
    "No-TN-Validation",
)
MAX_KEYS = 64
MAX_SPEECH = 500
OUTBOX_SHOWN = 50


class _Refused(HTTPException):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@bp.get("")
def page() -> str:
    return render_template(
        "dev_phone.html",
        api=f"{request.script_root}{bp.url_prefix}",
        verstats=VERSTATS,
        caller="+15005550006",
    )


@bp.post("/dial")
def dial() -> Response:
    body = _body()
    caller = body.get("from", "+15005550006")
    if not isinstance(caller, str) or not CALLER.fullmatch(caller):
        raise _Refused(400, "`from`: a caller ID like +15005550006, or anonymous")
    verstat = body.get("stir_verstat") or None
    if verstat is not None and (not isinstance(verstat, str) or not VERSTAT.fullmatch(verstat)):
        raise _Refused(400, "`stir_verstat`: a StirVerstat value like TN-Validation-Passed-A")
    line = _line()
    call, step = phone.dial(line, caller, verstat, CALLED_NUMBER)
    return _view(call, step)


@bp.post("/answer")
def answer() -> Response:
    body = _body()
    call = _call(body)
    given = _answer(body)
    line = _line()
    return _view(call, _moved(lambda: phone.answer(line, call, given)))


@bp.post("/callback")
def callback() -> Response:
    call = _call(_body())
    line = _line()
    return _view(call, _moved(lambda: phone.answer_callback(line, call)))


@bp.post("/hangup")
def hang_up() -> Response:
    call = _call(_body())
    line = _line()
    result = _moved(lambda: phone.hang_up(line, call))
    return _view(call, Step(result, None))


@bp.post("/save")
def save() -> Response:
    body = _body()
    call = _call(body)
    name = body.get("name") or f"a call played in the browser phone from {call.caller}"
    if not isinstance(name, str) or len(name) > 120:
        raise _Refused(400, "`name`: the scenario's name, at most 120 characters")
    settings = runtime().settings
    try:
        steps = call.scenario()
        document = scenario_document(settings.flow, name, call.caller, call.stir_verstat, steps)
        path = save_scenario(settings.flows_dir / "tests", document)
    except PhoneError as exc:
        raise _Refused(409, str(exc)) from None
    except RecordingError as exc:
        raise _Refused(422, str(exc)) from None
    text = path.read_text(encoding="utf-8")
    shown = shown_path(path)
    return jsonify(file=shown, command=f"ivr flows test {shown}", yaml=text)


@bp.get("/outbox")
def outbox() -> Response:
    """What reached the customer's phone and mailbox: messages from index `after` on."""
    after = request.args.get("after", "0")
    if not after.isdigit() or len(after) > 9:
        raise _Refused(400, "`after`: a message index, 0 or more")
    messages = Outbox(runtime().settings.outbox).messages()
    start = max(int(after), len(messages) - OUTBOX_SHOWN)
    shown = [
        {"index": i, "channel": m.channel, "to": m.to, "subject": m.subject, "body": m.body}
        for i, m in enumerate(messages[start:], start)
    ]
    return jsonify(count=len(messages), messages=shown)


@bp.errorhandler(HTTPException)
def _json_error(error: HTTPException) -> tuple[Response, int]:
    return jsonify(error=error.description), error.code or 400


@bp.after_request
def _headers(response: Response) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(())
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


# -- the pieces ------------------------------------------------------------------------------


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_token(), salt=SALT)


def _line() -> Line:
    settings = runtime().settings
    base = (settings.public_url or f"{request.scheme}://{request.host}") + request.script_root
    return Line(
        WsgiTransport(current_app._get_current_object()),  # type: ignore[attr-defined]
        base,
        _token(),
        Outbox(settings.outbox),
        callback_from=settings.caller_id or CALLED_NUMBER,
    )


def _token() -> str:
    token = runtime().settings.twilio_auth_token
    if not token:
        raise _Refused(503, "TWILIO_AUTH_TOKEN: not set; the phone signs its calls with it")
    return token


def _body() -> dict[str, Any]:
    if not request.is_json:
        raise _Refused(415, "send JSON (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise _Refused(400, "the body is not a JSON object")
    return body


def _call(body: dict[str, Any]) -> PhoneCall:
    signed = body.get("call")
    if not isinstance(signed, str) or not signed:
        raise _Refused(400, "`call`: the call this page was given; dial first")
    try:
        data = _serializer().loads(signed, max_age=runtime().settings.session_ttl)
        return PhoneCall.from_json(data)
    except SignatureExpired:
        raise _Refused(400, "this call is too old to go on: dial again") from None
    except (BadSignature, ValueError):
        raise _Refused(400, "`call`: not a call this server made; dial again") from None


def _answer(body: dict[str, Any]) -> Keys | Speech | None:
    given = [k for k in ("keys", "say", "silence") if k in body]
    if len(given) != 1:
        raise _Refused(400, "answer with one of `keys`, `say` (with `confidence`), `silence`")
    if given == ["silence"]:
        return None
    if given == ["keys"]:
        keys = body["keys"]
        if not isinstance(keys, str) or not 0 < len(keys) <= MAX_KEYS:
            raise _Refused(400, f"`keys`: 1 to {MAX_KEYS} of 0-9 * #")
        try:
            return Keys(keys)
        except ValueError as exc:
            raise _Refused(400, f"`keys`: {exc}") from None
    words, confidence = body["say"], body.get("confidence", phone.DEFAULT_CONFIDENCE)
    if not isinstance(words, str) or not 0 < len(words) <= MAX_SPEECH:
        raise _Refused(400, f"`say`: the words, 1 to {MAX_SPEECH} characters")
    is_number = isinstance(confidence, int | float) and not isinstance(confidence, bool)
    if not is_number or not math.isfinite(confidence) or not 0 <= confidence <= 1:
        raise _Refused(400, "`confidence`: a number from 0 to 1")
    return Speech(words, float(confidence))


def _moved(move: Any) -> Any:
    """Run one move of the call; what does not fit the call is the person's 409."""
    try:
        return move()
    except PhoneError as exc:
        raise _Refused(409, str(exc)) from None
    except TwimlError as exc:
        raise _Refused(400, f"`call`: {exc}") from None


def _view(call: PhoneCall, step: Step) -> Response:
    """What the page shows after a move, and the call to send back with the next one."""
    result = step.result
    gather = step.gather
    waiting = None
    if gather is not None:
        waiting = {
            "dtmf": gather.accepts_dtmf,
            "speech": gather.accepts_speech,
            "num_digits": gather.num_digits,
            "finish_on_key": gather.finish_on_key,
            "timeout": gather.timeout,
        }
    requests = [e for e in result.events if e.kind != "status"]
    return jsonify(
        call=_serializer().dumps(call.to_json()),
        lines=[{"kind": kind, "text": text} for kind, text in result.log if kind != "request"],
        twiml=[
            {"request": f"{e.method} {_path(e.url)} -> {e.status or 'no answer'}", "body": e.body}
            for e in requests
        ],
        waiting=waiting,
        outcome=call.outcome,
        queue=call.queue,
        on_hold=call.outcome == "enqueued" and not call.caller_hung_up,
        outbox_from=call.outbox_from,
        steps=len(call.steps),
    )


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)
