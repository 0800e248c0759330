"""Engine actions -> TwiML, through twilio's own builder: the only place TwiML is made."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from functools import lru_cache

from twilio.twiml.voice_response import Gather, VoiceResponse

from ivr.flows.engine import Action, Ask, Enqueue, Hangup, Hold, Say
from ivr.flows.schema import Flow

ActionUrl = Callable[[str, bool], str]
"""Builds the URL Twilio comes back to: a step's answer URL, or (True) its poll URL."""


#: Rendered replies a `Templates` keeps, with the action URLs left out: a flow says the same
#: few things over and over, and only the URLs (the call's sequence) change.
MAX_TEMPLATES = 1024
#: Where a URL goes in a template: random per process, so no flow text can contain it.
_MARK = f"ivr-url-{secrets.token_hex(8)}-"
_MARKS = re.compile(re.escape(_MARK) + r"([0-9]+)\.")
#: A URL that TwiML carries unescaped, in an attribute and in element text alike.
_PLAIN_URL = re.compile(r"[^&<>\"'\s]*")

TemplateKey = tuple[tuple[Action, ...], str, str | None, str | None]
Template = tuple[list[str], list[tuple[str, bool]]]  # text around the URLs; each URL's call


class Templates(dict[TemplateKey, Template]):
    """The replies one process has rendered, as templates (`render`'s `templates`)."""


def render(
    actions: list[Action],
    flow: Flow,
    action_url: ActionUrl,
    workflow_sid: str | None = None,
    templates: Templates | None = None,
) -> str:
    """With a TaskRouter `workflow_sid` a caller is enqueued as a task whose attributes are
    the Enqueue action's; without one, into the plain named queue, with nothing attached.

    With `templates` the same text comes from a template twilio's builder made once for these
    actions, with only the URLs filled in: not for an Enqueue (its attributes are no part of
    its equality), nor when a URL would need escaping."""
    if templates is None or any(isinstance(action, Enqueue) for action in actions):
        return _render(actions, flow, action_url, workflow_sid)
    key: TemplateKey = (tuple(actions), flow.language, flow.voice, workflow_sid)
    template = templates.get(key)
    if template is None:
        template = _template(actions, flow, workflow_sid)
        if len(templates) >= MAX_TEMPLATES:
            templates.clear()
        templates[key] = template
    texts, calls = template
    urls = [action_url(step, poll) for step, poll in calls]
    if not all(_PLAIN_URL.fullmatch(url) for url in urls):
        return _render(actions, flow, action_url, workflow_sid)
    parts = texts.copy()
    parts[1::2] = [urls[int(index)] for index in texts[1::2]]
    return "".join(parts)


def _template(actions: list[Action], flow: Flow, workflow_sid: str | None) -> Template:
    calls: list[tuple[str, bool]] = []

    def marked(step: str, poll: bool) -> str:
        calls.append((step, poll))
        return f"{_MARK}{len(calls) - 1}."

    # Split at each mark: text, URL index, text, URL index, ..., text.
    return _MARKS.split(_render(actions, flow, marked, workflow_sid)), calls


def _render(
    actions: list[Action], flow: Flow, action_url: ActionUrl, workflow_sid: str | None = None
) -> str:
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
