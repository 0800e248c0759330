"""Static proofs about a flow, run by `ivr flows check` and before any flow is served.

The door check walks every path from `start`, carrying what the caller could have proved by
then, so a queue that some path reaches without its required assurance is found before a caller
finds it. Passing an `identify` step leaves the caller with nothing proved, as in the engine: a
claim drops every proof of the one before and voids its pending sends and codes (SECURITY 28),
so a flow may loop back to `identify` and the walk still judges each claim on its own proofs.

Each queue is judged by its one declaration under `queues:`: only proofs by its `methods` count,
and since any caller may come without caller ID attestation, every path must meet the stricter
of `requires` and `unattested_requires`.

The caller's side is checked as well, on what the engine would really send: that each gather's
prompt says how to answer it, that its speech hints and every TwiML document stay within
Twilio's limits, and that what a prompt asks for is what the step's `<Gather>` accepts.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import deque
from dataclasses import dataclass
from xml.etree import ElementTree

from ivr.assurance import Assurance, Factor, factor_of
from ivr.errors import Problem
from ivr.flows.engine import (
    CALLBACK_CONFIRM,
    FIRST_POLL_SECONDS,
    MAX_HOPS,
    Action,
    Ask,
    Enqueue,
    Hangup,
    Hold,
    Say,
    ask,
)
from ivr.flows.loader import Marks, dotted
from ivr.flows.prompts import ALLOWED_FIELDS, fill, placeholders, unbalanced
from ivr.flows.render import render
from ivr.flows.schema import (
    CODE_METHODS,
    PROMPT_FIELDS,
    AuthenticateStep,
    EnqueueStep,
    Flow,
    GatherOptions,
    GotoStep,
    HangupStep,
    IdentifyStep,
    MenuStep,
    Queue,
    SayStep,
    Step,
)

_State = tuple[str, "_Knowledge"]
_Seen = dict[_State, tuple[_State, str] | None]


@dataclass(frozen=True)
class _Knowledge:
    """What a caller may have proved at a point of a path."""

    identified: bool = False
    methods: frozenset[str] = frozenset()


def check_flow(flow: Flow, marks: Marks | None = None, filename: str = "<flow>") -> list[Problem]:
    """Every problem found, errors and warnings; a flow with any error must not be served."""
    checker = _Checker(flow, marks or {}, filename)
    checker.run()
    return checker.problems


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


class _Checker:
    def __init__(self, flow: Flow, marks: Marks, filename: str) -> None:
        self.flow = flow
        self.marks = marks
        self.filename = filename
        self.problems: list[Problem] = []
        self.targets = {step_id: flow.targets(step_id) for step_id in flow.steps}
        self._from_start: _Seen | None = None

    def run(self) -> None:
        self._targets_exist()
        self._queues_declared()
        if any(p.severity == "error" for p in self.problems):
            return  # the graph walks below need every edge to lead somewhere
        self._prompts()
        templates_ok = not any(p.severity == "error" for p in self.problems)
        self._says_how_to_answer()
        self._digits()
        if templates_ok:  # measuring fills every template, which a broken one cannot be
            _Measure(self.flow).run(self)
        self._door()
        self._unused_queues()
        self._failure_route_never_transfers()
        self._no_silent_loops()
        self._unreachable()

    def _add(
        self, path: tuple[str | int, ...], message: str, hint: str = "", severity: str = "error"
    ) -> None:
        located = path
        while located and located not in self.marks:
            located = located[:-1]
        line, col = self.marks.get(located, (None, None))
        self.problems.append(
            Problem(self.filename, line, col, dotted(path), message, hint, severity)
        )

    def _field_path(self, step_id: str, field: str) -> tuple[str | int, ...]:
        if field == "authentication.failure_route":
            return ("authentication", "failure_route")
        if field.startswith("choices["):
            index = int(field[len("choices[") : field.index("]")])
            return ("steps", step_id, "choices", index, "next")
        return ("steps", step_id, field)

    def _targets_exist(self) -> None:
        names = list(self.flow.steps)
        refs: list[tuple[tuple[str | int, ...], str]] = [(("start",), self.flow.start)]
        refs.append((("authentication", "failure_route"), self.flow.authentication.failure_route))
        for step_id in self.flow.steps:
            for field, target in self.targets[step_id]:
                if field != "authentication.failure_route" and target not in self.flow.steps:
                    refs.append((self._field_path(step_id, field), target))
        for path, target in refs:
            if target not in self.flow.steps:
                close = difflib.get_close_matches(target, names, n=1)
                hint = f"did you mean `{close[0]}`?" if close else f"steps are: {', '.join(names)}"
                self._add(path, f"no step named `{target}`", hint)

    def _prompts(self) -> None:
        allowed = ", ".join(f"{{{f}}}" for f in sorted(ALLOWED_FIELDS))
        for step_id, step in self.flow.steps.items():
            for field in _prompt_fields(type(step)):
                text = getattr(step, field)
                if not text:
                    continue
                path = ("steps", step_id, field)
                if unbalanced(text):
                    self._add(
                        path,
                        "broken template: a `{` or `}` that is not part of a placeholder",
                        f"braces are only for {allowed}; spell the rest out",
                    )
                    continue
                for name in placeholders(text):
                    if name not in ALLOWED_FIELDS:
                        self._add(
                            path,
                            f"prompt templates `{{{name}}}`: never read customer data aloud",
                            f"remove it; a prompt may only use {allowed}",
                        )

    def _queues_declared(self) -> None:
        names = list(self.flow.queues)
        for step_id, step in self.flow.steps.items():
            if isinstance(step, EnqueueStep) and step.queue not in self.flow.queues:
                close = difflib.get_close_matches(step.queue, names, n=1)
                hint = (
                    f"did you mean `{close[0]}`?"
                    if close
                    else "declare it under `queues:` with its `requires:` and `roles:`"
                )
                self._add(
                    ("steps", step_id, "queue"), f"no queue `{step.queue}` under `queues:`", hint
                )

    def _unused_queues(self) -> None:
        used = {s.queue for s in self.flow.steps.values() if isinstance(s, EnqueueStep)}
        for name in self.flow.queues:
            if name not in used:
                self._add(
                    ("queues", name),
                    "no `enqueue` step sends callers to this queue",
                    "remove it or name it in a step's `queue:`",
                    severity="warning",
                )

    def _walk(
        self, start: str, knowledge: _Knowledge
    ) -> dict[tuple[str, _Knowledge], tuple[str, _Knowledge] | None]:
        """Every (step, what may be proved) reachable from `start`, with a parent for paths."""
        seen: dict[tuple[str, _Knowledge], tuple[str, _Knowledge] | None] = {
            (start, knowledge): None
        }
        todo = deque([(start, knowledge)])
        while todo:
            state = todo.popleft()
            step_id, know = state
            step = self.flow.steps[step_id]
            if isinstance(step, EnqueueStep | HangupStep):
                continue
            for field, target in self.targets[step_id]:
                after = know
                if field == "next" and isinstance(step, IdentifyStep):
                    after = _Knowledge(identified=True)  # a new claim drops proofs of the old one
                elif field == "next" and isinstance(step, AuthenticateStep):
                    after = _Knowledge(know.identified, know.methods | {step.method})
                nxt = (target, after)
                if nxt not in seen:
                    seen[nxt] = (state, field)
                    todo.append(nxt)
        return seen

    @staticmethod
    def _path(seen: _Seen, state: _State) -> str:
        """`a -> b -(on_failure)-> c`: the edge is named where it is not the plain `next`."""
        text = state[0]
        link = seen[state]
        while link is not None:
            parent, field = link
            arrow = " -> " if field == "next" else f" -({field})-> "
            text = parent[0] + arrow + text
            link = seen[parent]
        return text

    def _walk_from_start(self) -> _Seen:
        if self._from_start is None:
            self._from_start = self._walk(self.flow.start, _Knowledge())
        return self._from_start

    def _door(self) -> None:
        seen = self._walk_from_start()
        reported: set[str] = set()
        possession: dict[str, set[str]] = {}
        for state in seen:
            step_id, know = state
            step = self.flow.steps[step_id]
            if isinstance(step, EnqueueStep):
                queue = self.flow.queues[step.queue]
                req = queue.requirement
                counted = know.methods & req.methods
                held = {m for m in counted if factor_of(m) is Factor.possession}
                possession.setdefault(step.queue, set()).update(held)
                level = req.level_of(know.identified, know.methods)
                if level < req.strictest and step_id not in reported:
                    reported.add(step_id)
                    self._shut_door(seen, state, step, queue, level)
            if (
                isinstance(step, AuthenticateStep)
                and not know.identified
                and step_id not in reported
            ):
                reported.add(step_id)
                route = self._path(seen, state)
                self._add(
                    ("steps", step_id),
                    f"authenticates a caller who has not claimed an account, by {route}",
                    "put an `identify` step before it",
                )

        for name, queue in self.flow.queues.items():
            accepted = {m for m in queue.requirement.methods if factor_of(m) is Factor.possession}
            if queue.requirement.strictest is Assurance.two_factor and (
                possession.get(name) == {"email_otp"} or accepted == {"email_otp"}
            ):
                where = "methods" if queue.methods is not None else "requires"
                self._add(
                    ("queues", name, where),
                    "email is the only possession factor this two_factor queue gets; "
                    "NIST SP 800-63B rev 4 no longer accepts email as an out-of-band authenticator",
                    "offer sms_otp, callback or service_code as well, and leave email_otp out "
                    "of the queue's `methods`",
                    severity="warning",
                )

    def _shut_door(
        self, seen: _Seen, state: _State, step: EnqueueStep, queue: Queue, level: Assurance
    ) -> None:
        req = queue.requirement
        why = ""
        if req.strictest > req.level:
            why = " when caller ID is not attested"
        ignored = sorted(state[1].methods - req.methods)
        if ignored:
            why += f"; {', '.join(ignored)} does not count for it"
        hint = "put an `authenticate` step on that path before the queue"
        if queue.methods is not None:
            hint += f", by one of {', '.join(queue.methods)}"
        self._add(
            ("steps", state[0], "queue"),
            f"a caller can reach queue `{step.queue}` with assurance `{level.name}` "
            f"(needs `{req.strictest.name}`{why}) by {self._path(seen, state)}",
            hint,
        )

    def _failure_route_never_transfers(self) -> None:
        route = self.flow.authentication.failure_route
        full = _Knowledge(True, frozenset({"pin", "sms_otp"}))  # even a fully proved caller
        seen = self._walk(route, full)
        for state in seen:
            step = self.flow.steps[state[0]]
            if isinstance(step, EnqueueStep):
                self._add(
                    ("authentication", "failure_route"),
                    f"after failed authentication a caller can still reach queue `{step.queue}` by "
                    + self._path(seen, state),
                    "end the failure route with a `hangup` that names another route",
                )
                return

    def _no_silent_loops(self) -> None:
        """A cycle of say/goto steps would loop forever without waiting for the caller; so
        would one through an `authenticate` step, once its method is proved (the engine never
        asks for a proved factor again)."""
        ends: set[str] = set()  # steps whose silent walk is known to reach the caller
        for start_id in self.flow.steps:
            cursor, visited = start_id, []
            while cursor not in ends and isinstance(
                step := self.flow.steps[cursor], SayStep | GotoStep | AuthenticateStep
            ):
                if cursor in visited:
                    loop = " -> ".join([*visited[visited.index(cursor) :], cursor])
                    self._add(
                        ("steps", cursor, "next"),
                        f"loops forever without input: {loop}",
                        "send one of these steps to a menu or a hangup",
                    )
                    return
                visited.append(cursor)
                cursor = step.next
            ends.update(visited)

    def _unreachable(self) -> None:
        reachable = {step_id for step_id, _ in self._walk_from_start()}
        for step_id in self.flow.steps:
            if step_id not in reachable:
                self._add(
                    ("steps", step_id),
                    "no path from `start` reaches this step",
                    "remove it or point a `next` at it",
                    severity="warning",
                )

    def _says_how_to_answer(self) -> None:
        """A caller who is not told what to press or say guesses, and spends tries; warnings,
        since a prompt may say it in words no rule foresees."""
        for step_id, step in self.flow.steps.items():
            path = ("steps", step_id, "prompt")
            if isinstance(step, MenuStep):
                self._menu_says_how(step_id, step)
            elif isinstance(step, IdentifyStep):
                self._keypad_prompt(path, step.prompt, "your account number")
                if step.caller_id and not _mentions_key(step.prompt, "*"):
                    self._add(
                        path,
                        "`caller_id: true`, but the prompt never says to press star",
                        'add e.g. "If you are calling from the phone number on your account, '
                        'press star, then pound."',
                        severity="warning",
                    )
            elif isinstance(step, AuthenticateStep) and step.method == "passcode":
                if not _SPEAK_WORDS.search(step.prompt):
                    self._add(
                        path,
                        "a passcode is spoken, but the prompt does not say to say it",
                        'write e.g. "Please say your passcode."',
                        severity="warning",
                    )
            elif isinstance(step, AuthenticateStep) and step.method == "callback":
                if not _mentions_key(step.answer_prompt, CALLBACK_CONFIRM):
                    self._add(
                        ("steps", step_id, "answer_prompt"),
                        f"the call back waits for key {CALLBACK_CONFIRM}, "
                        "but this prompt does not mention it",
                        f'end it with e.g. "To continue, press {CALLBACK_CONFIRM}."',
                        severity="warning",
                    )
            elif isinstance(step, AuthenticateStep):
                self._keypad_prompt(path, step.prompt, f"the {_NAMES[step.method]}")

    def _keypad_prompt(self, path: tuple[str | int, ...], prompt: str, what: str) -> None:
        if not _KEYPAD_WORDS.search(prompt):
            self._add(
                path,
                "the caller answers on the keypad, but the prompt does not say so",
                f'say e.g. "Please enter {what}, then press the pound key."',
                severity="warning",
            )

    def _menu_says_how(self, step_id: str, step: MenuStep) -> None:
        dtmf, speech = "dtmf" in step.input, "speech" in step.input
        untold: list[str] = []
        for choice in step.choices:
            keyed = dtmf and choice.key is not None and _mentions_key(step.prompt, choice.key)
            said = speech and any(_mentions_phrase(step.prompt, w) for w in choice.words)
            if keyed or said:
                continue
            ways = [f"press {choice.key}"] if dtmf and choice.key is not None else []
            ways += [f"say {choice.words[0]}"] if speech and choice.words else []
            untold.append(f"{' or '.join(ways)} (for `{choice.next}`)")
        if untold:
            self._add(
                ("steps", step_id, "prompt"),
                "the prompt does not tell callers how to choose every option",
                f"mention {'; '.join(untold)}",
                severity="warning",
            )

    def _digits(self) -> None:
        """What the prompt asks for against what the rendered `<Gather>` takes."""
        for step_id, step in self.flow.steps.items():
            if isinstance(step, IdentifyStep):
                low, high = step.min_digits, step.max_digits
                for match in _DIGIT_COUNT.finditer(step.prompt):
                    count = int(match.group(1))
                    if not low <= count <= high:
                        self._add(
                            ("steps", step_id, "prompt"),
                            f"the prompt asks for {match.group(0)}, but the step takes "
                            f"{low} to {high} digits",
                            "make `min_digits` and `max_digits` match the account numbers "
                            "callers have, or correct the prompt",
                            severity="warning",
                        )
            if isinstance(step, MenuStep) and "dtmf" in step.input:
                for index, choice in enumerate(step.choices):
                    if choice.key != _MENU_FINISH_KEY:
                        continue
                    by_speech = "speech" in step.input and bool(choice.words)
                    self._add(
                        ("steps", step_id, "choices", index, "key"),
                        f"`{_MENU_FINISH_KEY}` ends the menu's <Gather> without a key, so this "
                        "choice can never be pressed" + (" (only said)" if by_speech else ""),
                        "use a digit or `*`",
                        severity="warning" if by_speech else "error",
                    )


# --- the caller's side: how to answer, Twilio's limits, what each <Gather> accepts ---

MAX_TWIML_BYTES = 64 * 1024  # Twilio refuses a larger response (error 11750) and the call fails
MAX_HINTS = 500  # a <Gather>'s `hints`: at most 500 comma-separated entries (warning 13330)
MAX_HINT_CHARS = 100  # ... of at most 100 characters each
_KEYPAD_WORDS = re.compile(r"\b(press|enter|key|keys|keypad|pound|hash|type|dial)\b|#", re.I)
_SPEAK_WORDS = re.compile(r"\b(say|speak|tell)\b", re.I)
_SPOKEN_KEYS = {
    "0": ("zero", "oh"), "1": ("one",), "2": ("two",), "3": ("three",), "4": ("four",),
    "5": ("five",), "6": ("six",), "7": ("seven",), "8": ("eight",), "9": ("nine",),
    "*": ("star", "asterisk"), "#": ("pound", "hash"),
}  # fmt: skip
_DIGIT_COUNT = re.compile(r"\b(\d{1,2})[- ]digits?\b", re.I)
# Render leaves a menu's finishOnKey at Twilio's default, `#`: Twilio ends the <Gather> on it
# and does not pass it on, so `#` is never a menu's answer.
_MENU_FINISH_KEY = "#"
_NAMES = {
    "pin": "your PIN",
    "sms_otp": "code we sent you",
    "email_otp": "code we sent you",
    "service_code": "service code",
}


@functools.cache
def _prompt_fields(kind: type[Step]) -> tuple[str, ...]:
    """The prompt fields a kind of step has (asking a pydantic model for one it lacks is slow)."""
    return tuple(f for f in PROMPT_FIELDS if f in kind.model_fields)


def _mentions_key(text: str, key: str) -> bool:
    written = key in text if key in "*#" else re.search(rf"(?<!\d){key}(?!\d)", text)
    spoken = "|".join(_SPOKEN_KEYS[key])
    return bool(written) or re.search(rf"\b({spoken})\b", text, re.I) is not None


def _mentions_phrase(text: str, phrase: str) -> bool:
    words = phrase.split()
    pattern = r"\s+".join(re.escape(w) for w in words)
    return bool(words) and re.search(rf"(?<!\w){pattern}(?!\w)", text, re.I) is not None


def _action_url(step_id: str, poll: bool) -> str:
    """As long as the real one: the step's webhook path and the call's sequence number."""
    return f"/voice/{'poll' if poll else 'step'}/{step_id}?seq=999999"


_Part = tuple[Action, tuple[str | int, ...] | None]  # an action and the flow text it speaks


class _Measure:
    """Renders, through the engine and `render`, the largest document each step can be
    answered with, and each menu's speech hints, and holds them to Twilio's limits."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self._worst: dict[tuple[str, int], tuple[int, tuple[_Part, ...]]] = {}
        self._asks: dict[str, Ask] = {}

    def run(self, checker: _Checker) -> None:
        for step_id, step in self.flow.steps.items():
            if isinstance(step, MenuStep) and "speech" in step.input:
                self._hints(checker, step_id, step)
        reported: set[tuple[str | int, ...]] = set()
        for step_id, (lead, lead_path) in self._leads().items():
            _, parts = self._walk(step_id, MAX_HOPS)
            if lead:
                parts = ((Say(lead), lead_path), *parts)
            if most_bytes([a for a, _ in parts], self.flow) <= MAX_TWIML_BYTES:
                continue  # certainly within the limit: no need to render it
            size = len(render([a for a, _ in parts], self.flow, _action_url).encode("utf-8"))
            if size <= MAX_TWIML_BYTES:
                continue
            spoken = [(len(_spoken(a)), path) for a, path in parts if path is not None]
            length, biggest = max(spoken, key=lambda s: s[0])
            if biggest in reported:
                continue
            reported.add(biggest)
            checker._add(
                biggest,
                f"a caller entering step `{step_id}` would be sent {size} bytes of TwiML; "
                f"Twilio refuses more than {MAX_TWIML_BYTES} (error 11750) and the call fails",
                f"shorten this text ({length} characters), or split it over steps that wait "
                "for the caller",
            )

    def _hints(self, checker: _Checker, step_id: str, step: MenuStep) -> None:
        question = self._ask(step_id, step)
        entries = len(question.hints) + sum(h.count(",") for h in question.hints)
        if entries > MAX_HINTS:  # as many as Twilio reads in the rendered `hints`:
            document = render([question], self.flow, _action_url)
            gather = ElementTree.fromstring(document).find("Gather")  # noqa: S314 (ours, no DTD)
            entries = len((gather.get("hints") or "").split(",")) if gather is not None else 0
        if entries > MAX_HINTS:
            checker._add(
                ("steps", step_id, "choices"),
                f"the choices' words make {entries} speech hints; Twilio takes at most "
                f"{MAX_HINTS} (warning 13330)",
                "keep a few words per choice: what callers really say",
                severity="warning",
            )
        for index, choice in enumerate(step.choices):
            for at, word in enumerate(choice.words):
                path = ("steps", step_id, "choices", index, "words", at)
                if len(word) > MAX_HINT_CHARS:
                    checker._add(
                        path,
                        f"a speech hint of {len(word)} characters; Twilio takes at most "
                        f"{MAX_HINT_CHARS} (warning 13330)",
                        "a choice's words are what a caller says: a few words each",
                        severity="warning",
                    )
                if "," in word:
                    checker._add(
                        path,
                        "a comma in a choice's words splits it into two speech hints",
                        "write the parts as two words of the list",
                        severity="warning",
                    )

    def _ask(self, step_id: str, step: GatherOptions) -> Ask:
        if step_id not in self._asks:
            self._asks[step_id] = ask(self.flow, step_id, step)
        return self._asks[step_id]

    def _leads(self) -> dict[str, tuple[str, tuple[str | int, ...] | None]]:
        """For each step, the longest thing the engine may say before entering it: a retry's
        reprompt, a failed attempt's `failure_prompt`, a failed send's `unavailable_prompt`."""
        leads: dict[str, tuple[str, tuple[str | int, ...] | None]] = dict.fromkeys(
            self.flow.steps, ("", None)
        )

        def lead(target: str | None, step_id: str, field: str) -> None:
            text = self._fill(getattr(self.flow.steps[step_id], field))
            if target in leads and len(text) > len(leads[target][0]):
                leads[target] = (text, ("steps", step_id, field))

        for step_id, step in self.flow.steps.items():
            if isinstance(step, GatherOptions):
                lead(step_id, step_id, "reprompt")
            if isinstance(step, AuthenticateStep):
                lead(step.on_failure or step_id, step_id, "failure_prompt")
                lead(step.on_unavailable, step_id, "unavailable_prompt")
        return leads

    def _walk(self, step_id: str, hops: int) -> tuple[int, tuple[_Part, ...]]:
        """The longest run of actions the engine can answer with from entering `step_id`, as
        `Engine._enter` walks: says and gotos on, an authenticate step asked or (if proved)
        passed, never more than MAX_HOPS steps."""
        if hops == 0:
            return 0, ((Hangup(), None),)
        key = (step_id, hops)
        if key in self._worst:
            return self._worst[key]
        step = self.flow.steps[step_id]
        here = ("steps", step_id)
        options: list[tuple[_Part, ...]] = []
        if isinstance(step, SayStep):
            options.append(((Say(self._fill(step.say)), (*here, "say")), *self._rest(step, hops)))
        elif isinstance(step, GotoStep):
            options.append(self._rest(step, hops))
        elif isinstance(step, HangupStep | EnqueueStep):
            end = Hangup() if isinstance(step, HangupStep) else Enqueue(step_id, step.queue, {})
            said = ((Say(self._fill(step.say)), (*here, "say")),) if step.say else ()
            options.append((*said, (end, None)))
        else:
            assert isinstance(step, GatherOptions)
            callback = isinstance(step, AuthenticateStep) and step.method == "callback"
            asked = "answer_prompt" if callback else "prompt"
            options.append(((self._ask(step_id, step), (*here, asked)),))
        if isinstance(step, AuthenticateStep):
            options.append(self._rest(step, hops))  # proved already: passed, never asked
            if step.method in CODE_METHODS:
                hold = Say(self._fill(step.hold_prompt))
                options.append(
                    ((hold, (*here, "hold_prompt")), (Hold(step_id, FIRST_POLL_SECONDS), None))
                )
            if step.method == "callback":
                bye = Say(self._fill(step.prompt))
                options.append(((bye, (*here, "prompt")), (Hangup(), None)))
        best = max(((sum(len(_spoken(a)) for a, _ in o), o) for o in options), key=lambda o: o[0])
        self._worst[key] = best
        return best

    def _rest(self, step: SayStep | GotoStep | AuthenticateStep, hops: int) -> tuple[_Part, ...]:
        return self._walk(step.next, hops - 1)[1]

    def _fill(self, text: str) -> str:
        return fill(text, {"attempts_left": self.flow.authentication.max_failures})


_MARKUP_BYTES = 1024  # a verb's tags and attributes, its action URLs, a step or queue name


def most_bytes(actions: list[Action], flow: Flow) -> int:
    """At least the size of `render(actions)`: each character of the flow's text takes at most
    6 bytes once escaped (`&quot;`; UTF-8 takes 4), the rest of a verb is bounded. Rendering
    every step of a large flow would cost more than all the other checks together."""
    said = len(flow.language) + len(flow.voice or "")
    chars = 0
    for action in actions:
        hints = sum(len(h) + 2 for h in action.hints) if isinstance(action, Ask) else 0
        chars += len(_spoken(action)) + hints + 2 * said
    return _MARKUP_BYTES * (len(actions) + 1) + 6 * chars


def _spoken(action: Action) -> str:
    if isinstance(action, Say):
        return action.text
    return action.prompt if isinstance(action, Ask) else ""


def is_gather(step: object) -> bool:
    return isinstance(step, GatherOptions)
