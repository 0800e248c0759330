"""Engine actions -> TwiML, through twilio's own builder: the only place TwiML is made."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache

from twilio.twiml.voice_response import Gather, VoiceResponse

from ivr.flows.engine import Action, Ask, Enqueue, Hangup, Hold, Say
from ivr.flows.schema import Flow

ActionUrl = Callable[[str, bool], str]
"""Builds the URL Twilio comes back to: a step's answer URL, or (True) its poll URL."""


def render(
    actions: list[Action], flow: Flow, action_url: ActionUrl, workflow_sid: str | None = None
) -> str:
    """With a TaskRouter `workflow_sid` a caller is enqueued as a task whose attributes are
    the Enqueue action's; without one, into the plain named queue, with nothing attached."""
    response = VoiceResponse()
    voice = {"voice": flow.voice} if flow.voice else {}
    for action in actions:
        if isinstance(action, Say):
            response.say(action.text, language=flow.language, **voice)
        elif isinstance(action, Ask):
            url = action_url(action.step, False)
            options: dict[str, object] = {
                "input": action.input,
                "action": url,
                "method": "POST",
                "timeout": action.timeout,
                "language": flow.language,
            }
            if action.finish_on_key is not None:
                options["finish_on_key"] = action.finish_on_key
            if action.num_digits is not None:
                options["num_digits"] = action.num_digits
            if action.speech:
                options["speech_timeout"] = "auto"
                if action.hints:
                    options["hints"] = ", ".join(action.hints)
            gather = Gather(**options)
            gather.say(action.prompt, language=flow.language, **voice)
            response.append(gather)
            # Silence: Twilio moves on to the next verb, which comes back to the same question.
            response.redirect(url, method="POST")
        elif isinstance(action, Hold):
            response.pause(length=action.seconds)
            response.redirect(action_url(action.step, True), method="POST")
        elif isinstance(action, Enqueue) and workflow_sid:
            task = json.dumps(dict(action.attributes), separators=(",", ":"), sort_keys=True)
            response.enqueue(workflow_sid=workflow_sid).task(task)
        elif isinstance(action, Enqueue):
            response.enqueue(action.queue)
        elif isinstance(action, Hangup):
            response.hangup()
    return str(response)


@lru_cache(maxsize=16)
def apology(message: str, language: str = "en-US") -> str:
    """What a caller hears when anything fails: polite, final, and never an agent."""
    response = VoiceResponse()
    response.say(message, language=language)
    response.hangup()
    return str(response)
