"""Turn what speech recognition heard into one canonical passcode string.

Twilio may transcribe the same spoken passcode as "Purple elephant, forty-two.", "purple elephant
42" or "purple elephant four two" from one call to the next. Enrolment and verification both go
through `normalise_passcode`, so a caller is judged on what they said, not on how the recogniser
chose to spell it (SECURITY 17). The module is pure: no I/O, no Flask, no Redis.
"""

from __future__ import annotations

import unicodedata

MAX_SPEECH_CHARS = 500
"""Longer input is refused outright: no passcode is that long, and it caps the work per request."""

_UNITS: dict[str, int] = {
    "zero": 0,
    "oh": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}

_TENS: dict[str, int] = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}

_DIGITS_1_TO_9 = frozenset("123456789")

# Apostrophes vanish without splitting the word, so "one's" stays one token and is not read as "1s".
_APOSTROPHES = frozenset("'\u2019\u02bc\uff07")


def _tokens(text: str) -> list[str]:
    """Split into lower-case tokens of letters and digits; everything else separates or vanishes.

    Separators (spaces, dashes, punctuation, symbols such as emoji) end a token, so number words
    stay recognisable in "elephant,forty-two". Invisible characters (controls other than
    whitespace, zero-width and other format characters, surrogates, unassigned code points) are
    dropped without splitting, so "pur<ZWSP>ple" is still "purple".
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    tokens: list[str] = []
    current: list[str] = []
    for char in folded:
        category = unicodedata.category(char)
        if category[0] == "L":
            current.append(char)
        elif category == "Nd":
            # Any script's decimal digit counts as that digit: "٤٢" and "42" are the same answer.
            current.append(str(unicodedata.decimal(char)))
        elif category[0] == "M":
            # Combining marks carry vowels in many scripts; keep them only attached to a letter.
            if current:
                current.append(char)
        elif char in _APOSTROPHES or (category[0] == "C" and not char.isspace()):
            continue
        elif current:
            # Whitespace, dashes, other punctuation, symbols, other numerals (e.g. Roman).
            tokens.append("".join(current))
            current = []
    if current:
        tokens.append("".join(current))
    return tokens


def _numbers_to_digits(tokens: list[str]) -> list[str]:
    """Replace number words by digits, compounding "forty two" (or "forty 2") into "42"."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in _TENS:
            value = _TENS[token]
            following = tokens[i + 1] if i + 1 < len(tokens) else ""
            if following in _DIGITS_1_TO_9:
                out.append(str(value + int(following)))
                i += 2
                continue
            if 1 <= _UNITS.get(following, 0) <= 9:
                out.append(str(value + _UNITS[following]))
                i += 2
                continue
            out.append(str(value))
        elif token in _UNITS:
            out.append(str(_UNITS[token]))
        else:
            out.append(token)
        i += 1
    return out


def passcode_tokens(text: str) -> list[str]:
    """The normalised words of `text`, number words already turned into digits.

    Enrolment uses this to insist on several words; `normalise_passcode` joins them.
    Input longer than `MAX_SPEECH_CHARS` (or not a string at all) gives no tokens.
    """
    if not isinstance(text, str) or len(text) > MAX_SPEECH_CHARS:
        return []
    return _numbers_to_digits(_tokens(text))


def normalise_passcode(text: str) -> str:
    """Canonical form of a spoken passcode: letters and digits only, no spaces, lower case.

    Tokens are joined with nothing between them, so the recogniser's choices about word breaks
    ("purpleelephant" vs "purple elephant", "42" vs "four two") do not matter. Returns "" for
    input longer than `MAX_SPEECH_CHARS` or with nothing usable; callers treat "" as a failed
    attempt, never as a match.
    """
    return "".join(passcode_tokens(text))
