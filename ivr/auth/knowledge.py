"""Secrets the caller knows: a PIN typed on the keypad, or a passcode spoken aloud.

Stored only as argon2id hashes with a per-secret salt, optionally under a pepper kept outside
Redis (SECURITY 15). Weak choices are refused when they are set, not discovered later by an
attacker (SECURITY 16, 17). Pure module: no Flask, no Redis.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import re
import secrets
from datetime import date

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ivr.auth.speech import MAX_SPEECH_CHARS, normalise_passcode, passcode_tokens
from ivr.errors import WeakSecretError

MAX_PIN_LENGTH = 12
MIN_PIN_LENGTH_FLOOR = 4
"""Below 4 digits a PIN falls to a handful of guesses even with lockout; 4 is a documented risk."""

MIN_PASSCODE_CHARS = 8
MIN_PASSCODE_WORDS = 2


class SecretHasher:
    """Hash and check PINs and passcodes with argon2id, and an optional pepper.

    The defaults (t=2, m=19 MiB, p=1) are OWASP's argon2id minimum. With a pepper, the secret is
    first keyed with HMAC-SHA256, so a stolen Redis dump without the pepper cannot be brute-forced
    even for a 6-digit PIN.
    """

    def __init__(
        self,
        pepper: str | None = None,
        *,
        time_cost: int = 2,
        memory_cost: int = 19456,
        parallelism: int = 1,
    ) -> None:
        if pepper is not None and not pepper:
            # An empty pepper is almost always an unset environment variable; say so loudly
            # rather than hash everything under a key an attacker can guess.
            raise ValueError("pepper must be a non-empty string, or None for no pepper")
        self._pepper = pepper.encode("utf-8", "surrogatepass") if pepper else None
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        # Verified against when there is no stored hash, so an unknown account or an unset factor
        # costs the same argon2 work as a wrong secret (SECURITY 21).
        self._dummy_hash = self._hasher.hash(secrets.token_bytes(16))

    def _prepare(self, secret: str) -> bytes:
        # surrogatepass: odd input must give a (non-matching) hash, never a UnicodeEncodeError.
        raw = secret.encode("utf-8", "surrogatepass")
        if self._pepper is None:
            return raw
        return hmac.new(self._pepper, raw, hashlib.sha256).digest()

    def hash(self, secret: str) -> str:
        """A fresh salted argon2id hash string ("$argon2id$..."), safe to store."""
        return self._hasher.hash(self._prepare(secret))

    def verify(self, stored: str | None, secret: str) -> bool:
        """True only if `secret` matches `stored`; every failure is a plain False.

        A missing or malformed stored hash still costs one full verification, so the answer
        takes about as long whether or not the account or factor exists.
        """
        candidate = self._prepare(secret if isinstance(secret, str) else "")
        if isinstance(stored, str | bytes) and stored:
            try:
                return self._hasher.verify(stored, candidate) and isinstance(secret, str)
            except VerifyMismatchError:
                return False
            except (VerificationError, InvalidHashError):
                # Corrupt record: argon2 gave up early, so pay for a full run below.
                pass
        with contextlib.suppress(VerificationError):
            self._hasher.verify(self._dummy_hash, candidate)
        return False

    def needs_rehash(self, stored: str) -> bool:
        """True when `stored` was made with other parameters (or is unreadable) than today's.

        Call after a successful verify, then store `hash(secret)` to upgrade the record.
        """
        try:
            return self._hasher.check_needs_rehash(stored)
        except (InvalidHashError, ValueError, TypeError):
            return True


# No example PIN in the advice: any number we suggest would soon be a common PIN.
_PIN_ADVICE = (
    "Choose {low} to {high} digits that are not a run, a repeat, a mirror image, a date, "
    "a shape on the keypad or a popular PIN."
)

# The rules of `check_pin`, each refusing what an attacker tries first, and their sources:
# - one digit repeated, runs and even steps (111111, 123456, 135791), repeated units (121212),
#   mirror images (123321): the largest classes in the PIN-frequency studies (DataGenetics
#   2012, "PIN analysis", 3.4 million 4-digit PINs; Wang, Gu, Huang and Wang 2017,
#   "Understanding human-chosen PINs: characteristics, distribution and security", ASIA CCS,
#   4- and 6-digit PINs);
# - the most common PINs and 4-digit years 1900-2099 (`_COMMON_PINS`): the same studies;
# - three or more zeros at the start or the end (000123, 123000): a short number padded or
#   rounded to length, which leaves 10^(n-3) choices; padded and round numbers (000007,
#   100000) recur in the lists of both studies;
# - real calendar dates: DDMM and MMDD (4 digits), DDMMYY, MMDDYY, YYMMDD, and DDMMYYYY,
#   MMDDYYYY, YYYYMMDD (years 1900-2099). Dates, birthdays among them, are the commonest
#   structured choice of bank PIN, and with the birthday on an ID card in the same wallet a
#   thief's three guesses open about one wallet in eleven (Bonneau, Preibusch and Anderson
#   2012, "A birthday present every eleven wallets? The security of customer-chosen banking
#   PINs", Financial Cryptography); dates are a leading class of 6-digit PINs too (Wang et
#   al. 2017);
# - shapes on the keypad (1 2 3 / 4 5 6 / 7 8 9 / * 0 #): straight lines of at least three
#   neighbouring keys along a row, column or diagonal, one after another, turning on a key or
#   lifting the finger (2580, 147963, 159357, 258963). Such lines recur among the most common
#   PINs (DataGenetics 2012: 2580; Wang et al. 2017: 147258, 159357, 789456). A zigzag of
#   two-key steps (145236) is not refused: every walk of neighbouring keys would be 12% of
#   4-digit and 3% of 6-digit PINs, a class too large for any one of them to be a likely guess.

# Frequently chosen PINs: keypad shapes, pairs, dates and "cute" numbers (some are also caught by
# the pattern rules). Sources: published PIN-frequency studies (DataGenetics, Wang et al. 2017).
_COMMON_PINS: frozenset[str] = frozenset(
    {
        # 4 digits
        "1234", "0000", "1111", "1212", "7777", "1004", "2000", "4444", "2222", "6969",
        "9999", "3333", "5555", "6666", "1122", "1313", "8888", "4321", "2001", "1010",
        "2580", "0852", "1478", "7410", "1379", "1397", "1590", "0258", "5683", "0007",
        "1357", "2468", "1123", "1230", "1470", "4455", "6789", "1369", "1236", "2323",
        # 5 digits
        "12345", "54321", "11111", "00000", "12321", "13579", "11223", "10203", "14725",
        # 6 digits
        "112233", "159753", "147258", "102030", "696969", "520520", "123654", "789456",
        "147852", "159357", "000007", "101010", "111222", "222333", "100200", "123000",
        "456123", "123789", "789123", "741852", "963852", "852963", "258369", "147369",
        "753951", "951753", "246810", "135790", "321654", "654123", "112358", "123465",
        "200000", "100000", "121314", "131415", "110110", "123456", "654321", "666666",
        "520131", "521521", "314159", "007007", "080808", "998877", "778899", "445566",
        # 7-8 digits
        "1234567", "7654321", "12345678", "87654321", "11223344", "12344321", "14725836",
        "147258369", "123456789", "987654321", "1234567890", "0987654321",
    }
)  # fmt: skip


def _is_even_steps(pin: str) -> bool:
    """Digits that move by a constant step, wrapping 9->0: 123456, 987654, 890123, 135791."""
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(pin)}
    return len(steps) == 1


def _repeating_period(pin: str) -> int | None:
    """Length of the shortest unit that the PIN repeats (121212 -> 2, 1231231 -> 3), if any."""
    for period in range(1, len(pin) // 2 + 1):
        if all(pin[i] == pin[i - period] for i in range(period, len(pin))):
            return period
    return None


def _is_year(pin: str) -> bool:
    return len(pin) == 4 and 1900 <= int(pin) <= 2099


def _is_zero_padded(pin: str) -> bool:
    return pin.startswith("000") or pin.endswith("000")


# Where the day, month and year digits sit in the usual ways of writing a date as digits.
_DATE_LAYOUTS: dict[int, tuple[str, ...]] = {
    4: ("DDMM", "MMDD"),
    6: ("DDMMYY", "MMDDYY", "YYMMDD"),
    8: ("DDMMYYYY", "MMDDYYYY", "YYYYMMDD"),
}


def _years(digits: str) -> list[int]:
    """The years a date's year digits may stand for; none written means any year, and 2000
    (a leap year) lets 29 February count."""
    if not digits:
        return [2000]
    if len(digits) == 2:
        return [1900 + int(digits), 2000 + int(digits)]
    return [int(digits)] if 1900 <= int(digits) <= 2099 else []


def _is_real_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _is_date(pin: str) -> bool:
    """A real calendar date in one of `_DATE_LAYOUTS` (3112 and 311299 are, 3102 is not)."""
    for layout in _DATE_LAYOUTS.get(len(pin), ()):

        def part(letter: str, layout: str = layout) -> str:
            return "".join(d for d, at in zip(pin, layout, strict=True) if at == letter)

        day, month = int(part("D")), int(part("M"))
        if any(_is_real_date(year, month, day) for year in _years(part("Y"))):
            return True
    return False


# The phone keypad: 1 2 3 / 4 5 6 / 7 8 9 / * 0 #, as (row, column).
_KEYPAD = {str(n): ((n - 1) // 3, (n - 1) % 3) for n in range(1, 10)} | {"0": (3, 1)}
_MIN_STROKE = 3


def _step(a: str, b: str) -> tuple[int, int]:
    (row_a, col_a), (row_b, col_b) = _KEYPAD[a], _KEYPAD[b]
    return row_b - row_a, col_b - col_a


def _is_stroke(keys: str) -> bool:
    """Neighbouring keys in one straight line: along a row, a column or a diagonal."""
    first = _step(keys[0], keys[1])
    if max(abs(first[0]), abs(first[1])) != 1:
        return False
    return all(_step(a, b) == first for a, b in itertools.pairwise(keys))


def _is_keypad_shape(pin: str) -> bool:
    """Straight strokes of at least `_MIN_STROKE` keys, one after another: each stroke starts
    on the key the last one ended on (a turn, 14789) or anywhere (a lift of the finger, 147963).
    """
    ends = [False] * len(pin)  # ends[i]: pin[: i + 1] is such strokes, the last ending at i
    for end in range(_MIN_STROKE - 1, len(pin)):
        ends[end] = any(
            (start == 0 or ends[start - 1] or ends[start]) and _is_stroke(pin[start : end + 1])
            for start in range(end - _MIN_STROKE + 2)
        )
    return ends[-1]


def check_pin(pin: str, min_length: int = 6) -> None:
    """Refuse a PIN an attacker would try early; return None if it is acceptable.

    Rules (SECURITY 16; each with its source above `_COMMON_PINS`): digits only,
    `min_length`..12 long, not one repeated digit, not a run or evenly stepped sequence
    (wrapping 9->0), not a repeated short unit, not a mirror image, not on a list of commonly
    chosen PINs (nor a year 1900-2099 for 4 digits), not padded with three zeros at either end,
    not a calendar date, not a shape on the keypad. Messages never quote the PIN, so they are
    safe to log or show.

    Raises ValueError if `min_length` is below 4 or above 12 (a configuration bug), and
    WeakSecretError for a weak PIN.
    """
    if not MIN_PIN_LENGTH_FLOOR <= min_length <= MAX_PIN_LENGTH:
        raise ValueError(
            f"min_length must be between {MIN_PIN_LENGTH_FLOOR} and {MAX_PIN_LENGTH}, "
            f"got {min_length}"
        )
    advice = _PIN_ADVICE.format(low=min_length, high=MAX_PIN_LENGTH)
    if not isinstance(pin, str) or not re.fullmatch(r"[0-9]+", pin):
        raise WeakSecretError(f"A PIN may contain only the digits 0-9. {advice}")
    if len(pin) < min_length:
        raise WeakSecretError(f"The PIN is too short: use at least {min_length} digits. {advice}")
    if len(pin) > MAX_PIN_LENGTH:
        raise WeakSecretError(
            f"The PIN is too long: use at most {MAX_PIN_LENGTH} digits, so callers can key it "
            f"in reliably. {advice}"
        )
    if len(set(pin)) == 1:
        raise WeakSecretError(f"The PIN repeats a single digit (like 111111). {advice}")
    if _is_even_steps(pin):
        raise WeakSecretError(f"The PIN is a sequence (like 123456, 987654 or 135791). {advice}")
    if _repeating_period(pin) is not None:
        raise WeakSecretError(f"The PIN repeats a short pattern (like 121212 or 123123). {advice}")
    if pin == pin[::-1]:
        raise WeakSecretError(f"The PIN reads the same backwards (like 123321). {advice}")
    if pin in _COMMON_PINS or _is_year(pin):
        raise WeakSecretError(f"The PIN is one of the most commonly chosen PINs. {advice}")
    if _is_zero_padded(pin):
        raise WeakSecretError(f"The PIN begins or ends with three or more zeros. {advice}")
    if _is_date(pin):
        raise WeakSecretError(
            f"The PIN is a date, like a birthday (day, month and year in any usual order). {advice}"
        )
    if _is_keypad_shape(pin):
        raise WeakSecretError(
            f"The PIN traces straight lines on the keypad (along its rows, columns or "
            f"diagonals). {advice}"
        )


def check_passcode(passcode: str) -> None:
    """Refuse a spoken passcode that is short, a single word, or just a number.

    Judged on the normalised form (what verification will compare), so "Purple elephant 42" is
    checked as "purpleelephant42". Raises WeakSecretError with what to choose instead.
    """
    advice = (
        f"Choose a phrase of at least {MIN_PASSCODE_WORDS} words and {MIN_PASSCODE_CHARS} "
        "letters or digits that you can say clearly and others would not guess."
    )
    if not isinstance(passcode, str):
        raise WeakSecretError(f"The passcode must be text. {advice}")
    if len(passcode) > MAX_SPEECH_CHARS:
        raise WeakSecretError(
            f"The passcode is too long: at most {MAX_SPEECH_CHARS} characters. {advice}"
        )
    normalised = normalise_passcode(passcode)
    if len(normalised) < MIN_PASSCODE_CHARS:
        raise WeakSecretError(f"The passcode is too short. {advice}")
    if normalised.isdigit():
        raise WeakSecretError(f"The passcode is only a number; that is a PIN. {advice}")
    if len(passcode_tokens(passcode)) < MIN_PASSCODE_WORDS:
        raise WeakSecretError(f"The passcode is a single word. {advice}")


def enrol(hasher: SecretHasher, method: str, secret: str, *, pin_min_length: int = 6) -> str:
    """Refuse a weak secret, then hash it in the exact form the verifier will compare.

    Passcodes are hashed after normalisation, so "Purple elephant, forty-two" said on the phone
    matches "purple elephant 42" typed at enrolment.
    """
    if method == "pin":
        check_pin(secret, pin_min_length)
        return hasher.hash(secret)
    if method == "passcode":
        check_passcode(secret)
        return hasher.hash(normalise_passcode(secret))
    raise ValueError(f"{method} is not a secret the caller knows")
