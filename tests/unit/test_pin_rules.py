"""Weak PINs refused when set: dates, keypad shapes, zero padding (SECURITY 16), each with its
reason in the message and never the PIN; and every PIN the demo and the tests seed still passes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ivr.auth.knowledge import check_pin
from ivr.dev.customers import DEMO_CUSTOMERS
from ivr.errors import WeakSecretError
from tests.conftest import ALICE, BOB

REPO_ROOT = Path(__file__).resolve().parents[2]
DATE = "is a date"
KEYPAD = "straight lines on the keypad"
ZEROS = "three or more zeros"


def refusal(pin: str, min_length: int = 6) -> str:
    with pytest.raises(WeakSecretError) as refused:
        check_pin(pin, min_length)
    message = str(refused.value)
    assert pin not in message
    return message


class TestDates:
    @pytest.mark.parametrize(
        ("pin", "layout"),
        [
            ("010190", "DDMMYY"),
            ("311299", "DDMMYY"),
            ("121285", "DDMMYY"),
            ("123185", "MMDDYY"),
            ("850412", "YYMMDD"),
            ("290296", "DDMMYY, a leap day"),
            ("19900101", "YYYYMMDD"),
            ("24121987", "DDMMYYYY"),
            ("07041976", "MMDDYYYY"),
            ("20150731", "YYYYMMDD"),
        ],
    )
    def test_refused(self, pin: str, layout: str) -> None:
        assert DATE in refusal(pin)

    @pytest.mark.parametrize("pin", ["3112", "1231", "2902", "0229", "0104"])
    def test_four_digit_day_and_month_when_four_are_allowed(self, pin: str) -> None:
        assert DATE in refusal(pin, min_length=4)

    @pytest.mark.parametrize(
        "pin",
        [
            "310295",  # 31 February, and no other order makes a date
            "290297",  # 29 February of a year that had none
            "3102",
            "31021999",
            "01011899",  # no year 1900-2099
            "13132099",
        ],
    )
    def test_only_real_calendar_dates(self, pin: str) -> None:
        check_pin(pin, min_length=4)


class TestKeypadShapes:
    @pytest.mark.parametrize(
        "pin",
        [
            "147963",  # down the left column, up the right
            "258963",
            "963258",
            "357951",  # the diagonals
            "741963",
            "14789",  # a line that turns on a key
            "7412369",
            "2580963",
        ],
    )
    def test_refused_with_the_reason(self, pin: str) -> None:
        assert KEYPAD in refusal(pin, min_length=5)

    @pytest.mark.parametrize("pin", ["159357", "2580", "0852", "147258"])
    def test_the_best_known_are_refused_as_common(self, pin: str) -> None:
        assert "commonly chosen" in refusal(pin, min_length=4)

    @pytest.mark.parametrize(
        "pin",
        [
            "159384",  # one line, then keys anywhere
            "145236",  # a zigzag of two-key steps
            "147097",  # 7 -> 0 is not a straight line
        ],
    )
    def test_a_line_and_anything_else_is_not_a_shape(self, pin: str) -> None:
        check_pin(pin)


class TestZeroPadding:
    @pytest.mark.parametrize("pin", ["000123", "0001", "000946", "583000", "0000583920"])
    def test_refused(self, pin: str) -> None:
        assert ZEROS in refusal(pin, min_length=4)

    @pytest.mark.parametrize("pin", ["005839", "583900", "058390", "500839"])
    def test_two_zeros_are_fine(self, pin: str) -> None:
        check_pin(pin)


class TestMessages:
    @pytest.mark.parametrize(
        ("pin", "same_rule"),
        [("010190", "311299"), ("147963", "258963"), ("000123", "000946")],
    )
    def test_a_rule_reads_the_same_whatever_the_pin(self, pin: str, same_rule: str) -> None:
        assert refusal(pin) == refusal(same_rule)
        assert "Choose 6 to 12 digits" in refusal(pin)

    def test_the_new_reasons_hold_no_digits(self) -> None:
        """So they can never quote the PIN they refuse, whatever it is."""
        for pin in ("010190", "147963", "000123"):
            reason = refusal(pin).split(". Choose")[0]
            assert not re.search(r"[0-9]", reason), reason


class TestSeededPins:
    @pytest.mark.parametrize(
        "pin", sorted({demo.pin for demo in DEMO_CUSTOMERS} | {ALICE.pin, BOB.pin})
    )
    def test_demo_and_test_customers_pass(self, pin: str) -> None:
        check_pin(pin)

    def test_every_pin_a_test_enrols_passes(self) -> None:
        """PIN constants and `--pin` values in the tests, as grep finds them."""
        found: set[str] = set()
        for path in (REPO_ROOT / "tests").rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            found |= set(re.findall(r'\bPIN = "([0-9]+)"', text))
            found |= set(re.findall(r'"--pin",\s*"([0-9]+)"', text))
        found -= {"123456"}  # the CLI test of a weak PIN
        assert found >= {"583920"}
        for pin in found:
            check_pin(pin)
