"""PINs and spoken passcodes: how they are stored, checked, and refused when weak."""

from __future__ import annotations

import argon2
import pytest

from ivr.auth.knowledge import SecretHasher, check_passcode, check_pin
from ivr.errors import CustomerError, WeakSecretError

FAST = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}
PIN = "583920"


@pytest.fixture(scope="module")
def hasher() -> SecretHasher:
    return SecretHasher(**FAST)


@pytest.fixture(scope="module")
def peppered() -> SecretHasher:
    return SecretHasher("pepper-one", **FAST)


class TestStoredHash:
    def test_is_argon2id(self, hasher: SecretHasher) -> None:
        assert hasher.hash(PIN).startswith("$argon2id$")

    def test_does_not_contain_the_secret(
        self, hasher: SecretHasher, peppered: SecretHasher
    ) -> None:
        assert PIN not in hasher.hash(PIN)
        assert PIN not in peppered.hash(PIN)

    def test_same_pin_hashes_differently_each_time(self, hasher: SecretHasher) -> None:
        assert hasher.hash(PIN) != hasher.hash(PIN)

    def test_default_parameters_are_owasp_minimum(self) -> None:
        stored = SecretHasher().hash(PIN)
        assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")

    def test_empty_pepper_is_refused(self) -> None:
        with pytest.raises(ValueError, match="pepper"):
            SecretHasher("", **FAST)


class TestVerify:
    def test_right_secret(self, hasher: SecretHasher) -> None:
        assert hasher.verify(hasher.hash(PIN), PIN) is True

    def test_wrong_secret(self, hasher: SecretHasher) -> None:
        assert hasher.verify(hasher.hash(PIN), "583921") is False

    def test_unknown_account_is_false(self, hasher: SecretHasher) -> None:
        assert hasher.verify(None, PIN) is False

    @pytest.mark.parametrize(
        "stored",
        ["", "not a hash", "$argon2id$v=19$m=1024,t=1,p=1$garbage", "$2b$12$abcdefghijk", "\x00"],
    )
    def test_malformed_stored_hash_is_false(self, hasher: SecretHasher, stored: str) -> None:
        assert hasher.verify(stored, PIN) is False

    @pytest.mark.parametrize("secret", ["", "\ud800", "🐘" * 200, "x" * 10_000])
    def test_odd_secret_is_false_not_an_error(self, hasher: SecretHasher, secret: str) -> None:
        assert hasher.verify(hasher.hash(PIN), secret) is False

    def test_odd_secret_round_trips(self, hasher: SecretHasher) -> None:
        odd = "\ud800 purple"
        assert hasher.verify(hasher.hash(odd), odd) is True

    def test_non_string_secret_is_false(self, hasher: SecretHasher) -> None:
        assert hasher.verify(hasher.hash(""), None) is False  # type: ignore[arg-type]


class _CountingHasher:
    """Wraps argon2's PasswordHasher (which has read-only slots) to record verify calls."""

    def __init__(self, real: argon2.PasswordHasher) -> None:
        self.real = real
        self.verified: list[str] = []

    def verify(self, hash_: str, password: bytes) -> bool:
        self.verified.append(hash_)
        return self.real.verify(hash_, password)

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


class TestUnknownAccountCostsTheSame:
    """SECURITY 21: no usable stored hash must still cost one argon2 verification."""

    @pytest.mark.parametrize("stored", [None, "", "not a hash", "$argon2id$v=19$garbage"])
    def test_runs_a_real_verification(
        self, hasher: SecretHasher, monkeypatch: pytest.MonkeyPatch, stored: str | None
    ) -> None:
        spy = _CountingHasher(hasher._hasher)
        monkeypatch.setattr(hasher, "_hasher", spy)
        assert hasher.verify(stored, PIN) is False
        # The last verification is a real argon2id run against a well-formed hash.
        assert spy.verified
        assert spy.verified[-1].startswith("$argon2id$v=19$m=1024,t=1,p=1$")

    def test_known_account_runs_exactly_one(
        self, hasher: SecretHasher, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        stored = hasher.hash(PIN)
        spy = _CountingHasher(hasher._hasher)
        monkeypatch.setattr(hasher, "_hasher", spy)
        assert hasher.verify(stored, "000000") is False
        assert spy.verified == [stored]


class TestPepper:
    def test_peppered_hash_verifies_under_same_pepper(self, peppered: SecretHasher) -> None:
        stored = peppered.hash(PIN)
        assert SecretHasher("pepper-one", **FAST).verify(stored, PIN) is True

    def test_does_not_verify_under_another_pepper(self, peppered: SecretHasher) -> None:
        stored = peppered.hash(PIN)
        assert SecretHasher("pepper-two", **FAST).verify(stored, PIN) is False

    def test_does_not_verify_without_the_pepper(
        self, peppered: SecretHasher, hasher: SecretHasher
    ) -> None:
        # A stolen Redis dump alone is not enough: the hash is of HMAC(pepper, PIN), not the PIN.
        assert hasher.verify(peppered.hash(PIN), PIN) is False

    def test_unpeppered_hash_does_not_verify_with_a_pepper(
        self, peppered: SecretHasher, hasher: SecretHasher
    ) -> None:
        assert peppered.verify(hasher.hash(PIN), PIN) is False


class TestNeedsRehash:
    def test_current_parameters_need_nothing(self, hasher: SecretHasher) -> None:
        assert hasher.needs_rehash(hasher.hash(PIN)) is False

    def test_weaker_parameters_need_rehash(self, hasher: SecretHasher) -> None:
        stronger = SecretHasher(time_cost=2, memory_cost=2048, parallelism=1)
        assert stronger.needs_rehash(hasher.hash(PIN)) is True

    @pytest.mark.parametrize("stored", ["", "not a hash"])
    def test_unreadable_hash_needs_rehash(self, hasher: SecretHasher, stored: str) -> None:
        assert hasher.needs_rehash(stored) is True


WEAK_PINS = [
    # one digit repeated
    "000000",
    "111111",
    "999999",
    # runs, either way, wrapping 9 -> 0
    "123456",
    "234567",
    "987654",
    "654321",
    "890123",
    "901234",
    "210987",
    "0123456789",
    # evenly stepped
    "135791",
    "246802",
    # short repeated units
    "121212",
    "123123",
    "112112",
    "456456",
    "10101010",
    "1231231",
    # mirror images
    "123321",
    "908809",
    "1234554321",
    "12344321",
    # common choices
    "112233",
    "159753",
    "147258",
    "102030",
    "696969",
    "520520",
    "123654",
    "789456",
    "147852",
    "159357",
    "000007",
    "101010",
]

WEAK_FOUR_DIGIT = [
    "1234",
    "0000",
    "1111",
    "1212",
    "7777",
    "1004",
    "2000",
    "4444",
    "2222",
    "6969",
    "9999",
    "3333",
    "5555",
    "6666",
    "1122",
    "1313",
    "8888",
    "4321",
    "2001",
    "1010",
    "1900",
    "1987",
    "2024",
    "2099",
    "2580",
]


class TestWeakPinsRefused:
    @pytest.mark.parametrize("pin", WEAK_PINS)
    def test_weak(self, pin: str) -> None:
        with pytest.raises(WeakSecretError):
            check_pin(pin)

    @pytest.mark.parametrize("pin", WEAK_FOUR_DIGIT)
    def test_weak_four_digit(self, pin: str) -> None:
        with pytest.raises(WeakSecretError):
            check_pin(pin, min_length=4)

    @pytest.mark.parametrize("pin", ["12345a", "12 3456", "", "١٢٣٤٥٦", "５８３９２０", "-583920"])  # noqa: RUF001
    def test_non_digits(self, pin: str) -> None:
        with pytest.raises(WeakSecretError, match="only the digits 0-9"):
            check_pin(pin)

    def test_too_short_by_default(self) -> None:
        with pytest.raises(WeakSecretError, match="at least 6 digits"):
            check_pin("5839")

    def test_too_long(self) -> None:
        with pytest.raises(WeakSecretError, match="at most 12 digits"):
            check_pin("5839207146385")

    def test_is_a_customer_error(self) -> None:
        with pytest.raises(CustomerError):
            check_pin("123456")

    @pytest.mark.parametrize(
        ("pin", "same_rule"),
        [("234567", "345678"), ("343434", "565656"), ("908809", "271172"), ("58392", "74021")],
    )
    def test_message_never_quotes_the_pin(self, pin: str, same_rule: str) -> None:
        # Messages may be logged or shown to staff: two PINs failing one rule read identically.
        with pytest.raises(WeakSecretError) as first:
            check_pin(pin)
        with pytest.raises(WeakSecretError) as second:
            check_pin(same_rule)
        assert str(first.value) == str(second.value)
        assert pin not in str(first.value)
        assert "Choose" in str(first.value)

    @pytest.mark.parametrize(
        ("pin", "reason"),
        [
            ("111111", "single digit"),
            ("123456", "sequence"),
            ("121212", "short pattern"),
            ("123321", "backwards"),
            ("159753", "commonly chosen"),
        ],
    )
    def test_message_says_why(self, pin: str, reason: str) -> None:
        with pytest.raises(WeakSecretError, match=reason):
            check_pin(pin)


class TestStrongPinsAccepted:
    @pytest.mark.parametrize(
        "pin", ["583920", "748219", "305817", "86420975", "583920714638", "079246"]
    )
    def test_strong(self, pin: str) -> None:
        check_pin(pin)

    @pytest.mark.parametrize("pin", ["5839", "7402", "3058", "1899", "2100"])
    def test_four_digits_when_allowed(self, pin: str) -> None:
        check_pin(pin, min_length=4)

    def test_longer_minimum(self) -> None:
        check_pin("58392071", min_length=8)
        with pytest.raises(WeakSecretError, match="at least 8 digits"):
            check_pin("583920", min_length=8)


class TestMinLengthSetting:
    @pytest.mark.parametrize("min_length", [-1, 0, 3, 13])
    def test_out_of_range_is_a_configuration_error(self, min_length: int) -> None:
        with pytest.raises(ValueError, match="min_length"):
            check_pin("583920", min_length=min_length)

    def test_not_a_weak_secret_error(self) -> None:
        with pytest.raises(ValueError) as info:
            check_pin("583920", min_length=3)
        assert not isinstance(info.value, WeakSecretError)


class TestPasscodes:
    @pytest.mark.parametrize(
        "passcode",
        [
            "Purple elephant, forty-two.",
            "purple elephant",
            "correct horse battery",
            "Blue lagoon 1987",
            "ｐｕｒｐｌｅ ＥＬＥＰＨＡＮＴ",  # noqa: RUF001
        ],
    )
    def test_accepted(self, passcode: str) -> None:
        check_passcode(passcode)

    @pytest.mark.parametrize(
        ("passcode", "reason"),
        [
            ("", "too short"),
            ("cat dog", "too short"),
            ("a b c d e f g", "too short"),
            ("🐘 🐘 🐘 🐘 🐘 🐘 🐘 🐘", "too short"),
            ("pur\u200bple", "too short"),
            ("elephants", "single word"),
            ("purpleelephant42", "single word"),
            ("supercalifragilistic", "single word"),
            ("1234 5678", "only a number"),
            ("four two four two four two four two", "only a number"),
            ("twenty twenty four nineteen ninety", "only a number"),
            ("purple elephant " * 40, "too long"),
        ],
    )
    def test_refused(self, passcode: str, reason: str) -> None:
        with pytest.raises(WeakSecretError, match=reason):
            check_passcode(passcode)

    def test_message_never_quotes_the_passcode(self) -> None:
        with pytest.raises(WeakSecretError) as info:
            check_passcode("elephants")
        assert "elephant" not in str(info.value).lower()

    def test_huge_input_refused_quickly(self) -> None:
        with pytest.raises(WeakSecretError, match="too long"):
            check_passcode("x " * 5_000)
