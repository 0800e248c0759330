"""`TimedTransport` records every webhook request with its answer, including the ones that got no
answer at all: the tests check answers were quick with it, and the benchmark measures with it."""

from collections.abc import Callable, Iterable
from typing import Any

from ivr.simulator import CallPlayer, HttpTransport, TimedTransport, WsgiTransport, scripted
from ivr.store.server import find_free_port

HANGUP = b'<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>'


def hang_up(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/xml")])
    return [HANGUP]


def test_every_request_is_recorded_in_order_with_its_answer() -> None:
    timed = TimedTransport(WsgiTransport(hang_up))
    player = CallPlayer(timed, "http://ivr.test", "token", pause_scale=0)

    result = player.play(scripted())

    assert result.outcome == "hung_up"
    assert [(s.path, s.reply.status) for s in timed.sent] == [
        ("/voice", 200),
        ("/voice/status", 200),
    ]
    assert timed.sent[0].params["CallSid"] == player.call_sid
    assert timed.sent[0].done <= timed.sent[1].done


def test_a_request_that_got_no_answer_is_recorded_as_status_0() -> None:
    nobody = f"http://127.0.0.1:{find_free_port()}"  # nothing listens there
    timed = TimedTransport(HttpTransport(timeout=2, connect_timeout=2))

    result = CallPlayer(timed, nobody, "token", pause_scale=0).play(scripted())

    assert result.outcome == "error" and result.error_status == 0
    assert [(s.path, s.reply.status) for s in timed.sent] == [("/voice", 0), ("/voice/status", 0)]
