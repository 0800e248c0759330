"""Twilio's voice webhooks: the call's front door.

Each request is signature-checked before anything else, and its parameters are read only from
the body that signature covers (`_params`); then it is handled under a per-call lock with the
call's state from Redis; the reply is stored with the state so a retried request gets the same
reply instead of a second attempt. Anything that goes wrong becomes a polite apology, never a
500 and never an agent.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
from collections.abc import Callable

from flask import Blueprint, Response, current_app, g, request, url_for
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from ivr.auth.signals import attestation
from ivr.flows.engine import Action, CallerInput, CallState, Engine
from ivr.flows.render import apology, render
from ivr.lookup import LineSignals
from ivr.runtime import Runtime, runtime
from ivr.security import signed_params
from ivr.store.codes import CallbackRefs
from ivr.store.sessions import OVER_STATUSES

log = logging.getLogger(__name__)
bp = Blueprint("voice", __name__, url_prefix="/voice")

CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
START_SEQ = -1  # reply_seq of the answer to the first request, POST /voice
MAX_SPEECH_INPUT = 2000
MAX_ACTION_PATHS = 4096  # (script root, poll?, step) -> path, kept per app


@bp.before_request
def _signed() -> None:
    g.twilio_params = signed_params(request, runtime().settings)


def _params() -> dict[str, str]:
    """What Twilio sent: the one place a handler reads a webhook parameter from."""
    params: dict[str, str] = g.twilio_params
    return params


@bp.errorhandler(Exception)
def _fail_closed(error: Exception) -> Response | HTTPException:
    if isinstance(error, HTTPException):
        return error
    log.error(
        "voice webhook failed (%s); caller gets the apology", type(error).__name__, exc_info=error
    )
    return _twiml(apology(runtime().settings.apology))


@bp.post("")
def incoming() -> Response:
    """A new call: the flow starts from the top."""
    caller = _params().get("From", "")[:64]
    return _start(
        lambda sid, engine: CallState(call_sid=sid, caller=caller, step=engine.flow.start),
        lambda engine, state: engine.start(state),
    )


def _ref() -> str:
    """The call's opaque reference: random, so it says nothing about the caller."""
    return secrets.token_urlsafe(12)


@bp.post("/callback")
def callback() -> Response:
    """The customer answered the call back placed to the number on file.

    The call inherits the claim of the call that asked for it only through the reference the
    worker stored under this call's own CallSid, which Twilio alone can present; it is taken
    once, and without it there is nothing to resume.
    """
    rt = runtime()

    def inherit(sid: str, engine: Engine) -> CallState | None:
        ref = CallbackRefs(rt.redis).take(sid)
        if ref is None:
            return None
        return CallState(
            call_sid=sid,
            caller=ref.caller,
            step=ref.step,
            account=ref.account,
            proofs=list(ref.proofs),
            failures=ref.failures,
            called_back=ref.account,
            proven_at=dict(ref.proven_at),
            flow_version=ref.flow_version,
        )

    return _start(inherit, lambda engine, state: engine.answer_callback(state))


@bp.post("/step/<step>")
def step(step: str) -> Response:
    """The caller answered (or stayed silent at) the question of `step`."""
    return _advance(step, lambda engine, state: engine.answer(state, _caller_input()))


@bp.post("/poll/<step>")
def poll(step: str) -> Response:
    """The caller has held while a code is sent: is it there yet?"""
    return _advance(step, lambda engine, state: engine.poll(state))


def _start(
    new_state: Callable[[str, Engine], CallState | None],
    first: Callable[[Engine, CallState], list[Action]],
) -> Response:
    rt = runtime()
    call_sid = _call_sid()
    if call_sid is None:
        return _twiml(apology(rt.settings.apology))
    with rt.audit.batched() as events, rt.sessions.take(call_sid) as taken:
        stored, lock = taken.stored, taken.lock
        if stored is not None:
            if stored.reply_seq == START_SEQ and stored.reply is not None:
                return _twiml(stored.reply)  # Twilio retried the first request
            engine = rt.pinned(stored.state)
            return _twiml(_reply(rt, engine, stored.state, engine.repeat(stored.state)))
        # The version live now is the call's until it ends, whatever is published meanwhile.
        version, engine = rt.current()
        state = new_state(call_sid, engine)
        if state is None:
            return _twiml(apology(rt.settings.apology))
        if state.flow_version:  # a call back goes on with the version its call started on
            engine = rt.pinned(state)
        state.flow_version = state.flow_version or version
        # A call back is our own outbound call: it carries no PASSporT, so "absent" too.
        state.ref, state.signals = _ref(), attestation(_params().get("StirVerstat"))
        how = ["callback"] if state.called_back else []
        # First on the call's trail: the flow's own events (a call back's "offered") follow.
        rt.audit.record(
            "call_started",
            call_sid=call_sid,
            caller=state.caller,
            detail=" ".join([*how, _signal_text(state.signals)]),  # e.g. "attestation=A"
        )
        reply = _reply(rt, engine, state, first(engine, state))
        rt.sessions.save(state, START_SEQ, reply, lock, also=events.write)
    log.info("call %s started", call_sid)
    return _twiml(reply)


def _advance(step: str, handle: Callable[[Engine, CallState], list[Action]]) -> Response:
    rt = runtime()
    call_sid = _call_sid()
    seq = request.args.get("seq", type=int)
    if call_sid is None or seq is None:
        return _twiml(apology(rt.settings.apology))
    with rt.audit.batched() as events, rt.sessions.take(call_sid) as taken:
        stored, lock = taken.stored, taken.lock
        if stored is None:
            # Expired or never started here: there is nothing safe to resume.
            return _twiml(apology(rt.settings.apology))
        state = stored.state
        if seq == stored.reply_seq and stored.reply is not None:
            return _twiml(stored.reply)  # Twilio retried a request we already answered
        engine = rt.pinned(state)
        if seq != state.seq or step != state.step:
            return _twiml(_reply(rt, engine, state, engine.repeat(state)))
        # What the worker's Lookup found for the number on file of this claim, if anything.
        LineSignals(rt.redis, rt.settings.session_ttl).fold(state, taken.signals)
        actions = handle(engine, state)
        state.seq += 1
        reply = _reply(rt, engine, state, actions)
        rt.sessions.save(state, seq, reply, lock, also=events.write)
    log.info("call %s now at %s", call_sid, state.step)
    return _twiml(reply)


@bp.post("/status")
def status() -> Response:
    """Twilio's status callback: a call that has ended is marked over, so no agent can read
    it any longer; nothing else changes, least of all what the caller proved."""
    call_status = _params().get("CallStatus", "?")[:20]
    log.info("call %s status %s", _params().get("CallSid", "?")[:40], call_status)
    call_sid = _call_sid()
    if call_sid is not None and call_status in OVER_STATUSES:
        try:
            runtime().sessions.mark_over(call_sid)
        except RedisError as exc:
            # Twilio ignores the answer; the call's state expires with the session TTL.
            log.warning("call %s: not marked over (%s)", call_sid, type(exc).__name__)
    return Response(status=204)


@bp.post("/fallback")
def fallback() -> Response:
    """Twilio calls this when our main URL failed: the caller gets the apology, nothing more."""
    return _twiml(apology(runtime().settings.apology))


@bp.post("/")
@bp.post("/<path:unknown>")
def unknown(unknown: str = "") -> Response:
    """A signed request for a path we do not serve (a mistyped webhook URL, a trailing slash):
    the caller hears the apology rather than Twilio's stock error for an HTML 404."""
    log.warning("no voice webhook at %r; the caller gets the apology", request.path[:100])
    return _twiml(apology(runtime().settings.apology))


def _reply(rt: Runtime, engine: Engine, state: CallState, actions: list[Action]) -> str:
    paths, root, seq = rt.action_paths, request.script_root, int(state.seq)

    def action_url(step_id: str, poll: bool) -> str:
        key = (root, poll, step_id)
        path = paths.get(key)
        if path is None:  # built by url_for once per step, root and process
            if len(paths) >= MAX_ACTION_PATHS:
                paths.clear()
            path = paths[key] = url_for("voice.poll" if poll else "voice.step", step=step_id)
        return f"{path}?seq={seq}"  # what urlencode({"seq": seq}) makes of an int

    return render(actions, engine.flow, action_url, rt.settings.taskrouter_workflow_sid)


def _signal_text(signals: dict[str, str]) -> str:
    return " ".join(f"{name}={value}" for name, value in sorted(signals.items()))


def _call_sid() -> str | None:
    value = _params().get("CallSid", "")
    return value if CALL_SID.fullmatch(value) else None


def _caller_input() -> CallerInput:
    params = _params()
    digits = params.get("Digits")
    speech = params.get("SpeechResult")
    return CallerInput(
        digits=digits[:100] if digits else None,
        speech=speech[:MAX_SPEECH_INPUT] if speech else None,
        confidence=_confidence(params.get("Confidence")),
        at=time.time(),
    )


def _confidence(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    if value is None or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return None
    return value


def _twiml(body: str) -> Response:
    return current_app.response_class(body, status=200, mimetype="application/xml")
