"""Spoken passcodes: however the recogniser spells an answer, the same words compare equal."""

from __future__ import annotations

import pytest

from ivr.auth.speech import MAX_SPEECH_CHARS, normalise_passcode, passcode_tokens

CANONICAL = "purpleelephant42"


class TestSameAnswerManySpellings:
    @pytest.mark.parametrize(
        "heard",
        [
            "Purple elephant, forty-two.",
            "purple elephant 42",
            "purple elephant four two",
            "Purple-Elephant forty two.",
            "purpleelephant 42",
            "purpleelephant42",
            "PURPLE ELEPHANT FORTY TWO!",
            "  purple   elephant\tforty\ntwo  ",
            "purple elephant forty 2",
            "purple elephant 4 2",
            "“Purple” elephant… forty—two?",
            "purple; elephant: (42)",
        ],
    )
    def test_matches_enrolled_form(self, heard: str) -> None:
        assert normalise_passcode(heard) == CANONICAL

    def test_different_words_stay_different(self) -> None:
        assert normalise_passcode("purple elephant 43") != CANONICAL
        assert normalise_passcode("purple elephants 42") != CANONICAL


class TestNumberWords:
    @pytest.mark.parametrize(
        ("heard", "expected"),
        [
            ("zero", "0"),
            ("oh seven", "07"),
            ("nineteen", "19"),
            ("twelve", "12"),
            ("forty two", "42"),
            ("forty-two", "42"),
            ("ninety", "90"),
            ("ninety nine", "99"),
            ("twenty zero", "200"),
            ("four two", "42"),
            ("one two three four", "1234"),
            ("twenty twenty four", "2024"),
            ("seventy", "70"),
        ],
    )
    def test_become_digits(self, heard: str, expected: str) -> None:
        assert normalise_passcode(heard) == expected

    def test_number_words_inside_other_words_are_left_alone(self) -> None:
        # "stone" contains "one", "often" contains "ten": only whole words are numbers.
        assert normalise_passcode("stone often") == "stoneoften"

    def test_apostrophe_does_not_split_a_word(self) -> None:
        assert normalise_passcode("one's turn") == "onesturn"

    def test_tokens_keep_word_breaks(self) -> None:
        assert passcode_tokens("Purple elephant, forty-two.") == ["purple", "elephant", "42"]


class TestOddUnicode:
    @pytest.mark.parametrize(
        ("heard", "expected"),
        [
            ("ｐｕｒｐｌｅ ＥＬＥＰＨＡＮＴ ４２", CANONICAL),  # noqa: RUF001 (full-width forms)
            ("pur\u200bple ele\u200dphant 4\u200c2", CANONICAL),  # zero-width characters
            ("\ufeffpurple elephant 42\u2060", CANONICAL),  # BOM and word joiner
            ("purple 🐘 elephant 42 🎉", CANONICAL),  # emoji
            ("purple\x00\x07 elephant\x1b 42", CANONICAL),  # control characters
            ("purple elephant \u0664\u0662", CANONICAL),  # Arabic-Indic digits
            ("purple elephant ⁴²", CANONICAL),  # superscripts fold to digits
            ("Straße", "strasse"),  # casefold, not just lower()
            ("Cafe\u0301", "café"),  # combining accent composes
            ("Ω", "ω"),
            ("कमल कमाल", "कमलकमाल"),  # other scripts kept, vowel signs included
        ],
    )
    def test_normalised(self, heard: str, expected: str) -> None:
        assert normalise_passcode(heard) == expected

    @pytest.mark.parametrize(
        "heard",
        ["\ud800purple", "\udfff", "\U0010ffff", "\ue000", "\u0378", "\u202e42\u202d"],
    )
    def test_never_crashes(self, heard: str) -> None:
        assert isinstance(normalise_passcode(heard), str)

    def test_lone_surrogate_is_dropped(self) -> None:
        assert normalise_passcode("\ud800purple elephant 42") == CANONICAL


class TestNothingUsable:
    @pytest.mark.parametrize("heard", ["", "   ", "...", "🐘🐘", "\u200b\u200b", "!?-,"])
    def test_empty(self, heard: str) -> None:
        assert normalise_passcode(heard) == ""

    def test_not_a_string_gives_empty(self) -> None:
        assert normalise_passcode(None) == ""  # type: ignore[arg-type]


class TestLengthCap:
    def test_cap_is_500(self) -> None:
        assert MAX_SPEECH_CHARS == 500

    def test_at_the_cap_is_normalised(self) -> None:
        assert normalise_passcode("a" * MAX_SPEECH_CHARS) == "a" * MAX_SPEECH_CHARS

    def test_one_over_the_cap_is_empty(self) -> None:
        assert normalise_passcode("a" * (MAX_SPEECH_CHARS + 1)) == ""

    def test_huge_input_is_empty(self) -> None:
        assert normalise_passcode("purple elephant 42 " * 600) == ""
        assert normalise_passcode("x" * 10_000) == ""
        assert passcode_tokens("x" * 10_000) == []

    def test_expanding_characters_under_the_cap_are_fine(self) -> None:
        # U+FDFA expands to 18 letters under NFKC; the cap is on what the caller sent.
        result = normalise_passcode("\ufdfa" * MAX_SPEECH_CHARS)
        assert len(result) > MAX_SPEECH_CHARS
