"""A fake Twilio that plays whole phone calls against the IVR, for `ivr call` and for tests.

Typical use::

    player = CallPlayer(WsgiTransport(app), "http://localhost", auth_token)
    result = player.play(scripted(Keys("1234#"), Speech("billing")))
    assert result.outcome == "enqueued" and result.queue == "general"
"""

from ivr.simulator.player import (
    FAKE_ACCOUNT_SID,
    CallerInput,
    CallPlayer,
    CallResult,
    Event,
    InputSource,
    Keys,
    Observer,
    Outcome,
    Scripted,
    ScriptExhaustedError,
    Speech,
    scripted,
)
from ivr.simulator.transport import (
    HttpTransport,
    Reply,
    Sent,
    TimedTransport,
    Transport,
    TransportError,
    WsgiTransport,
)
from ivr.simulator.twiml import (
    Dial,
    Enqueue,
    Gather,
    Hangup,
    Pause,
    Play,
    Redirect,
    Reject,
    Say,
    TwimlError,
    Unknown,
    Verb,
    parse_twiml,
)

__all__ = [
    "FAKE_ACCOUNT_SID",
    "CallPlayer",
    "CallResult",
    "CallerInput",
    "Dial",
    "Enqueue",
    "Event",
    "Gather",
    "Hangup",
    "HttpTransport",
    "InputSource",
    "Keys",
    "Observer",
    "Outcome",
    "Pause",
    "Play",
    "Redirect",
    "Reject",
    "Reply",
    "Say",
    "ScriptExhaustedError",
    "Scripted",
    "Sent",
    "Speech",
    "TimedTransport",
    "Transport",
    "TransportError",
    "TwimlError",
    "Unknown",
    "Verb",
    "WsgiTransport",
    "parse_twiml",
    "scripted",
]
