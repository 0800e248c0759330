"""The call simulator behaves like Twilio against a tiny IVR that checks signatures like ours will.

The app under test is built here, from twilio's own VoiceResponse and RequestValidator, so these
tests pin the simulator's behaviour without depending on the real IVR's flows.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask, Response, abort, request
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse
from werkzeug.serving import make_server

from ivr.errors import IvrError
from ivr.simulator import (
    FAKE_ACCOUNT_SID,
    CallPlayer,
    Dial,
    Enqueue,
    Gather,
    Hangup,
    HttpTransport,
    Keys,
    Pause,
    Play,
    Redirect,
    Reject,
    Say,
    ScriptExhaustedError,
    Speech,
    TransportError,
    TwimlError,
    Unknown,
    WsgiTransport,
    parse_twiml,
    scripted,
)

TOKEN = "test-auth-token-0123456789abcdef"
BASE = "http://localhost"


@dataclass
class Seen:
    """One request as the test app received it."""

    path: str
    method: str
    url: str
    form: dict[str, str]
    args: dict[str, str]


@dataclass
class MiniIvr:
    """The Flask app plus everything it was sent."""

    app: Flask
    seen: list[Seen] = field(default_factory=list)

    def to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


def twiml(vr: VoiceResponse) -> Response:
    return Response(str(vr), mimetype="text/xml")


def build_app(token: str = TOKEN) -> MiniIvr:
    """A miniature IVR: PIN gather, speech gather, loops and broken answers."""
    app = Flask(__name__)
    app.testing = True
    ivr = MiniIvr(app)
    validator = RequestValidator(token)

    @app.before_request
    def check_signature() -> None:
        signature = request.headers.get("X-Twilio-Signature", "")
        ivr.seen.append(
            Seen(request.path, request.method, request.url, dict(request.form), dict(request.args))
        )
        if not validator.validate(request.url, request.form, signature):
            abort(403)

    @app.post("/voice")
    def voice() -> Response:
        vr = VoiceResponse()
        vr.say("Welcome to the test line.")
        gather = vr.gather(num_digits=4, action="/voice/pin", timeout=5)
        gather.say("Enter your PIN.")
        vr.redirect("/voice/again")
        return twiml(vr)

    @app.post("/voice/again")
    def again() -> Response:
        vr = VoiceResponse()
        vr.say("We did not get that.")
        vr.hangup()
        return twiml(vr)

    @app.post("/voice/pin")
    def pin() -> Response:
        vr = VoiceResponse()
        if request.form.get("Digits") == "1234":
            vr.say("Thank you.")
            vr.enqueue("general")
        else:
            vr.say("Sorry.")
            vr.hangup()
        return twiml(vr)

    @app.post("/voice/speech")
    def speech() -> Response:
        vr = VoiceResponse()
        gather = vr.gather(input="speech", action="heard?step=2&attempt=1")
        gather.say("How can we help?")
        vr.say("Goodbye.")
        return twiml(vr)

    @app.post("/voice/heard")
    def heard() -> Response:
        vr = VoiceResponse()
        vr.say(f"You said {request.form['SpeechResult']}.")
        vr.dial("+15005550009")
        return twiml(vr)

    @app.post("/voice/empty")
    def empty() -> Response:
        vr = VoiceResponse()
        vr.gather(num_digits=1, action="/voice/pin", action_on_empty_result=True).say("Menu.")
        return twiml(vr)

    @app.post("/voice/loop")
    def loop() -> Response:
        vr = VoiceResponse()
        vr.say("Round we go.")
        vr.redirect("/voice/loop")
        return twiml(vr)

    @app.post("/voice/to-get")
    def to_get() -> Response:
        vr = VoiceResponse()
        vr.redirect("/voice/by-get?x=1", method="GET")
        return twiml(vr)

    @app.get("/voice/by-get")
    def by_get() -> Response:
        vr = VoiceResponse()
        vr.say(f"Got GET from {request.args['From']}.")
        return twiml(vr)

    @app.post("/voice/broken")
    def broken() -> Response:
        return Response("all good, honest", mimetype="text/plain")

    @app.post("/voice/status")
    def status() -> tuple[str, int]:
        return "", 204

    return ivr


@pytest.fixture
def ivr() -> MiniIvr:
    return build_app()


def player_for(ivr: MiniIvr, **kwargs: Any) -> CallPlayer:
    token = kwargs.pop("auth_token", TOKEN)
    return CallPlayer(WsgiTransport(ivr.app), BASE, token, **kwargs)


# -- the call flows ----------------------------------------------------------------------------


def test_scripted_keys_reach_the_queue(ivr: MiniIvr) -> None:
    result = player_for(ivr).play(scripted(Keys("1234")))

    assert result.outcome == "enqueued"
    assert result.queue == "general"
    assert result.heard == ["Welcome to the test line.", "Enter your PIN.", "Thank you."]
    assert ivr.to("/voice/pin")[0].form["Digits"] == "1234"
    assert ivr.to("/voice/pin")[0].form["FinishedOnKey"] == ""
    assert [e.kind for e in result.events] == ["voice", "gather", "status"]
    assert all(e.status in (200, 204) for e in result.events)
    assert not any("1234" in e.url for e in result.events)
    assert len(result.responses) == 2


def test_finish_key_ends_input_and_is_reported(ivr: MiniIvr) -> None:
    result = player_for(ivr).play(scripted(Keys("12#34")))

    assert ivr.to("/voice/pin")[0].form["Digits"] == "12"
    assert ivr.to("/voice/pin")[0].form["FinishedOnKey"] == "#"
    assert result.outcome == "hung_up"
    assert result.said("sorry")


def test_keys_beyond_num_digits_are_not_sent(ivr: MiniIvr) -> None:
    result = player_for(ivr).play(scripted(Keys("123456")))

    assert ivr.to("/voice/pin")[0].form["Digits"] == "1234"
    assert result.outcome == "enqueued"


def test_silence_falls_through_to_the_redirect(ivr: MiniIvr) -> None:
    result = player_for(ivr).play(scripted(None))

    assert result.outcome == "hung_up"
    assert result.heard[-1] == "We did not get that."
    assert [e.kind for e in result.events] == ["voice", "redirect", "status"]
    assert ivr.to("/voice/pin") == []


def test_a_lone_finish_key_counts_as_no_input(ivr: MiniIvr) -> None:
    result = player_for(ivr).play(scripted(Keys("#")))

    assert ivr.to("/voice/pin") == []
    assert result.said("We did not get that")


def test_speech_posts_result_and_confidence_to_relative_action(ivr: MiniIvr) -> None:
    result = player_for(ivr, voice_path="/voice/speech").play(
        scripted(Speech("billing please", 0.87))
    )

    posted = ivr.to("/voice/heard")[0]
    assert posted.form["SpeechResult"] == "billing please"
    assert posted.form["Confidence"] == "0.87"
    assert posted.args == {"step": "2", "attempt": "1"}
    assert result.said("You said billing please.")
    assert result.outcome == "dialed"
    assert result.dialed == "+15005550009"
    assert result.events[1].url == f"{BASE}/voice/heard?step=2&attempt=1"


def test_default_confidence_is_formatted_like_twilio(ivr: MiniIvr) -> None:
    player_for(ivr, voice_path="/voice/speech").play(scripted(Speech("agent")))

    assert ivr.to("/voice/heard")[0].form["Confidence"] == "0.92"


def test_speech_is_ignored_by_a_dtmf_only_gather(ivr: MiniIvr) -> None:
    result = player_for(ivr).play(scripted(Speech("one two three four")))

    assert ivr.to("/voice/pin") == []
    assert result.said("We did not get that")
    assert "ignores speech" in result.transcript()


def test_keys_are_ignored_by_a_speech_only_gather(ivr: MiniIvr) -> None:
    result = player_for(ivr, voice_path="/voice/speech").play(scripted(Keys("1")))

    assert ivr.to("/voice/heard") == []
    assert result.heard[-1] == "Goodbye."


def test_action_on_empty_result_posts_without_input(ivr: MiniIvr) -> None:
    result = player_for(ivr, voice_path="/voice/empty").play(scripted(None))

    posted = ivr.to("/voice/pin")[0]
    assert "Digits" not in posted.form
    assert "SpeechResult" not in posted.form
    assert result.said("Sorry.")


def test_get_redirect_puts_params_in_a_signed_query(ivr: MiniIvr) -> None:
    result = player_for(ivr, voice_path="/voice/to-get").play(scripted())

    got = ivr.to("/voice/by-get")[0]
    assert got.method == "GET"
    assert got.args["x"] == "1"
    assert got.args["CallSid"] == result.call_sid
    assert result.events[1].status == 200
    assert result.said("Got GET from +15005550006.")


# -- Twilio's request parameters and signature ---------------------------------------------------


def test_every_request_carries_twilio_call_params(ivr: MiniIvr) -> None:
    player = player_for(
        ivr,
        from_number="+15005550123",
        to_number="+15005550456",
        extra_params={"StirVerstat": "TN-Validation-Passed-A"},
    )
    result = player.play(scripted(Keys("1234")))

    assert re.fullmatch(r"CA[0-9a-f]{32}", result.call_sid)
    statuses = [s.form["CallStatus"] for s in ivr.seen]
    assert statuses == ["ringing", "in-progress", "completed"]
    for seen in ivr.seen:
        assert seen.form["CallSid"] == result.call_sid
        assert seen.form["AccountSid"] == FAKE_ACCOUNT_SID
        assert seen.form["From"] == seen.form["Caller"] == "+15005550123"
        assert seen.form["To"] == seen.form["Called"] == "+15005550456"
        assert seen.form["Direction"] == "inbound"
        assert seen.form["ApiVersion"] == "2010-04-01"
        assert seen.form["StirVerstat"] == "TN-Validation-Passed-A"
    assert re.fullmatch(r"AC[0-9a-f]{32}", FAKE_ACCOUNT_SID)


def test_wrong_auth_token_is_refused_with_403(ivr: MiniIvr) -> None:
    result = player_for(ivr, auth_token="not-the-token").play(scripted(Keys("1234")))

    assert result.outcome == "error"
    assert result.error_status == 403
    assert result.events[0].status == 403
    assert "403" in (result.error or "")
    assert result.heard == []
    assert [e.kind for e in result.events] == ["voice", "status"]


def test_status_callback_is_posted_and_signed(ivr: MiniIvr) -> None:
    result = player_for(ivr, call_sid="CA" + "ab" * 16).play(scripted(Keys("1234")))

    status = ivr.to("/voice/status")
    assert len(status) == 1
    assert status[0].form["CallStatus"] == "completed"
    assert status[0].form["CallSid"] == "CA" + "ab" * 16
    assert result.status_callback is not None
    assert result.status_callback.status == 204


def test_status_callback_can_be_switched_off(ivr: MiniIvr) -> None:
    result = player_for(ivr, send_status=False).play(scripted(Keys("1234")))

    assert ivr.to("/voice/status") == []
    assert result.status_callback is None


def test_max_requests_stops_a_redirect_loop(ivr: MiniIvr) -> None:
    result = player_for(ivr, voice_path="/voice/loop", max_requests=5).play(scripted())

    assert result.outcome == "error"
    assert "5 requests" in (result.error or "")
    assert len([e for e in result.events if e.kind != "status"]) == 5
    assert result.heard == ["Round we go."] * 5


def test_non_twiml_answer_ends_the_call_as_error(ivr: MiniIvr) -> None:
    result = player_for(ivr, voice_path="/voice/broken").play(scripted())

    assert result.outcome == "error"
    assert result.error_status == 200
    assert "not XML" in (result.error or "")
    assert result.events[0].body == "all good, honest"


def test_script_that_runs_out_raises_a_clear_error(ivr: MiniIvr) -> None:
    with pytest.raises(ScriptExhaustedError, match="input #1 but only 0 scripted"):
        player_for(ivr).play(scripted())


def test_unused_script_entries_are_visible(ivr: MiniIvr) -> None:
    script = scripted(Keys("1234"), Keys("9"))
    player_for(ivr).play(script)

    assert script.remaining == [Keys("9")]


def test_transcript_and_observer_tell_the_same_story(ivr: MiniIvr) -> None:
    lines: list[tuple[str, str]] = []
    result = player_for(ivr, observer=lambda kind, text: lines.append((kind, text))).play(
        scripted(Keys("1234"))
    )

    assert result.transcript().splitlines() == [
        "IVR: Welcome to the test line.",
        "IVR: Enter your PIN.",
        "CALLER pressed 1234",
        "IVR: Thank you.",
        "-> enqueued in queue 'general'",
    ]
    assert lines == result.log
    assert "[POST http://localhost/voice -> 200]" in result.transcript(requests=True)


def test_speech_transcript_line(ivr: MiniIvr) -> None:
    result = player_for(ivr, voice_path="/voice/speech").play(scripted(Speech("agent")))

    assert 'CALLER said "agent" (0.92)' in result.transcript()


def test_caller_input_is_validated() -> None:
    with pytest.raises(ValueError, match="0-9"):
        Keys("12a")
    with pytest.raises(ValueError, match="confidence"):
        Speech("hi", 1.5)
    with pytest.raises(TypeError):
        scripted("1234")  # type: ignore[arg-type]


# -- TwiML parsing --------------------------------------------------------------------------------


def test_parse_twiml_reads_every_modelled_verb() -> None:
    vr = VoiceResponse()
    vr.say("Hello   there")
    vr.play("https://example.com/a.mp3")
    vr.pause(length=2)
    gather = vr.gather(
        input="dtmf speech", num_digits=6, finish_on_key="*", timeout=3, action="/next"
    )
    gather.say("Say or type it.")
    gather.pause()
    vr.redirect("/again", method="GET")
    vr.enqueue("general", wait_url="/hold")
    vr.dial("+15005550009")
    vr.sms("hi")
    vr.hangup()
    vr.reject()

    verbs = parse_twiml(str(vr))

    assert verbs == [
        Say("Hello there"),
        Play("https://example.com/a.mp3"),
        Pause(2),
        Gather(
            action="/next",
            input="dtmf speech",
            num_digits=6,
            finish_on_key="*",
            timeout=3,
            children=[Say("Say or type it."), Pause(1)],
        ),
        Redirect("/again", "GET"),
        Enqueue("general", wait_url="/hold"),
        Dial("+15005550009"),
        Unknown("Sms"),
        Hangup(),
        Reject(),
    ]
    assert isinstance(verbs[3], Gather)
    assert verbs[3].accepts_dtmf
    assert verbs[3].accepts_speech


def test_parse_twiml_reads_nested_dial_nouns_and_tasks() -> None:
    vr = VoiceResponse()
    dial = vr.dial()
    dial.client("alice")
    enqueue = vr.enqueue(None, workflow_sid="WW" + "0" * 32)
    enqueue.task('{"language": "en"}')

    verbs = parse_twiml(str(vr))

    assert verbs[0] == Dial("alice", noun="Client")
    assert isinstance(verbs[1], Enqueue)
    assert verbs[1].task == '{"language": "en"}'
    assert verbs[1].queue == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "empty body"),
        ("hello", "not XML"),
        ("<Response><Say>unclosed</Response>", "not XML"),
        ("<Result><Say>x</Say></Result>", "expected Response"),
        ("<Response><Gather><Redirect>/x</Redirect></Gather></Response>", "cannot contain"),
        ('<Response><Gather numDigits="four"/></Response>', "not an integer"),
        ('<Response><Gather input="keys"/></Response>', "dtmf, speech"),
        ('<Response><Gather finishOnKey="##"/></Response>', "finishOnKey"),
        ('<Response><Redirect method="PUT">/x</Redirect></Response>', "GET or POST"),
        ("<Response><Redirect/></Response>", "no URL"),
        (f"<Response><Enqueue>{'q' * 65}</Enqueue></Response>", "longer than 64"),
        ('<!DOCTYPE r [<!ENTITY e "x">]><Response>&e;</Response>', "DOCTYPE"),
    ],
)
def test_parse_twiml_rejects_what_twilio_would(body: str, message: str) -> None:
    with pytest.raises(TwimlError, match=re.escape(message)):
        parse_twiml(body)


def test_twiml_error_is_an_ivr_error() -> None:
    assert issubclass(TwimlError, IvrError)


# -- real HTTP ----------------------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[MiniIvr, str]]:
    ivr = build_app()
    server = make_server("127.0.0.1", 0, ivr.app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ivr, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def test_http_transport_signs_the_url_the_server_validates(
    served: tuple[MiniIvr, str],
) -> None:
    ivr, base_url = served
    player = CallPlayer(HttpTransport(timeout=5.0), base_url, TOKEN)

    result = player.play(scripted(Keys("1234#")))

    assert result.outcome == "enqueued", result.transcript(requests=True)
    assert result.queue == "general"
    assert [s.url for s in ivr.seen] == [
        f"{base_url}/voice",
        f"{base_url}/voice/pin",
        f"{base_url}/voice/status",
    ]
    # numDigits=4 ended the input before the caller reached "#".
    assert ivr.to("/voice/pin")[0].form == ivr.to("/voice/pin")[0].form | {
        "Digits": "1234",
        "FinishedOnKey": "",
    }
    assert result.status_callback is not None
    assert result.status_callback.status == 204


def test_http_transport_reports_a_refused_connection_as_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    player = CallPlayer(HttpTransport(timeout=2.0), f"http://127.0.0.1:{port}", TOKEN)

    result = player.play(scripted())

    assert result.outcome == "error"
    assert result.error_status == 0
    assert [e.status for e in result.events] == [0, 0]


def test_wsgi_transport_refuses_relative_urls(ivr: MiniIvr) -> None:
    with pytest.raises(TransportError):
        WsgiTransport(ivr.app).post("/voice", {}, {})
