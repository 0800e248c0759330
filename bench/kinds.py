"""What a timed webhook request counts as in the report, from its URL and its answer."""

from __future__ import annotations

from urllib.parse import urlsplit

from ivr.flows.schema import CODE_METHODS, AuthenticateStep, Flow, IdentifyStep, MenuStep
from ivr.simulator import Redirect, Reply, Sent, TwimlError, parse_twiml

VOICE = "initial /voice"
IDENTIFY = "identify"
MENU = "menu"
PIN = "pin attempt"
PASSCODE = "passcode attempt"
CODE_REQUEST = "code request"
POLL = "hold poll"
CODE = "code attempt"
STATUS = "status callback"
OTHER = "other"
ORDER = (VOICE, IDENTIFY, MENU, PIN, PASSCODE, CODE_REQUEST, POLL, CODE, STATUS, OTHER)

STEP_PREFIX = "/voice/step/"
POLL_PREFIX = "/voice/poll/"


def step_kinds(flow: Flow) -> dict[str, str]:
    """Step id -> kind, for the /voice/step/<id> URLs the flow's gathers post to."""
    kinds: dict[str, str] = {}
    for step_id, step in flow.steps.items():
        if isinstance(step, IdentifyStep):
            kinds[step_id] = IDENTIFY
        elif isinstance(step, MenuStep):
            kinds[step_id] = MENU
        elif isinstance(step, AuthenticateStep):
            if step.method == "pin":
                kinds[step_id] = PIN
            elif step.method == "passcode":
                kinds[step_id] = PASSCODE
            elif step.method in (*CODE_METHODS, "service_code"):
                kinds[step_id] = CODE
    return kinds


def kind_of(sent: Sent, steps: dict[str, str]) -> str:
    """A step request whose answer puts the caller on hold is a "code request" whatever step it
    answered: that request queued the delivery job."""
    path = sent.path.rstrip("/")
    if path == "/voice":
        return VOICE
    if path == "/voice/status":
        return STATUS
    if path.startswith(POLL_PREFIX):
        return POLL
    if path.startswith(STEP_PREFIX):
        if puts_on_hold(sent.reply):
            return CODE_REQUEST
        return steps.get(path.removeprefix(STEP_PREFIX), OTHER)
    return OTHER


def puts_on_hold(reply: Reply) -> bool:
    """Whether the answer holds the caller: <Pause> then <Redirect> to /voice/poll/<step>."""
    if reply.status != 200:
        return False
    try:
        verbs = parse_twiml(reply.body)
    except TwimlError:
        return False
    return any(
        isinstance(verb, Redirect) and urlsplit(verb.url).path.startswith(POLL_PREFIX)
        for verb in verbs
    )
