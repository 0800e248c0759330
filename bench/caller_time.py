"""How long a person takes: the simulator's caller-time model (ivr.flows.caller_time, the
one `ivr flows test` reports), lived in real time instead of added up.

Every prompt is heard in full at `wpm` words a minute (a first-time caller does not barge in),
every answer starts `answer_seconds` after its prompt ends, and then takes its own time: keys
typed at `key_seconds` each, or the words said at `wpm`. `scale` shrinks all of it (not the
IVR's own <Pause>s) for a quick run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ivr.flows.caller_time import ANSWER_SECONDS, WORDS_PER_MINUTE, speech_seconds
from ivr.simulator import CallerInput, Keys, Speech

KEY_SECONDS = 0.3  # a keypress, about three a second on a phone's keypad


@dataclass(frozen=True)
class CallerTime:
    wpm: int = WORDS_PER_MINUTE
    answer_seconds: float = ANSWER_SECONDS
    key_seconds: float = KEY_SECONDS
    scale: float = 1.0

    def caller(self) -> Caller:
        return Caller(self)

    def answering(self, answer: CallerInput) -> float:
        """Seconds from the end of a prompt to the answer having been given."""
        if isinstance(answer, Keys):
            own = len(answer.digits) * self.key_seconds
        elif isinstance(answer, Speech):
            own = speech_seconds(answer.text, self.wpm)
        else:
            own = 0.0
        return (self.answer_seconds + own) * self.scale


class Caller:
    """One call's person: the player's observer (hears each <Say>) and the script's `pace`."""

    def __init__(self, model: CallerTime) -> None:
        self.model = model
        self.listened = 0.0  # seconds spent hearing prompts so far

    def observe(self, kind: str, line: str) -> None:
        if kind == "say":
            seconds = speech_seconds(line.removeprefix("IVR: "), self.model.wpm) * self.model.scale
            time.sleep(seconds)
            self.listened += seconds

    def pace(self, answer: CallerInput) -> None:
        time.sleep(self.model.answering(answer))

    def listened_seconds(self) -> float:
        return self.listened
