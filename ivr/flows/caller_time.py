"""How long a call takes the caller, as a person lives it, not the test's run time: every
prompt heard spoken at `WORDS_PER_MINUTE`, every `<Pause>` (the holds for a code), the full
gather timeout on each silence, and `ANSWER_SECONDS` to answer each prompt (plus the words,
for speech). Prompts are heard in full: a first-time caller does not barge in.
"""

from __future__ import annotations

import re

WORDS_PER_MINUTE = 150  # a measured, clear IVR voice; conversational speech runs nearer 160
ANSWER_SECONDS = 1.5  # to take in a prompt and start answering it


def speech_seconds(text: str, wpm: int = WORDS_PER_MINUTE) -> float:
    return len(re.findall(r"[\w']+", text)) * 60.0 / wpm
