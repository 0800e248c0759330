"""One-time codes: how they are drawn, digested and checked against the clock, and Verify's mark."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from ivr.auth import codes
from ivr.auth.possession import (
    Possession,
    destination,
)
from ivr.flows.engine import FactorUnavailable
from ivr.store import keys
from ivr.store.codes import VERIFY_MARK, CodeStore
from ivr.store.customers import Customer, RedisCustomerDirectory
from ivr.twilio_api import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from tests.conftest import (
    ALICE,
    BOB,
    customer,
    possession_with,
    state,
)
from tests.support import (
    KEY,
    SID_A,
    T0,
    TEN_MINUTES,
    UNKNOWN_ACCOUNT,
)

SID_B = "CA" + "cd" * 16


def alice_purpose(call_sid: str, method: str) -> str:
    """The purpose of a code sent in `call_sid` for Alice's claim, to her destination on file."""
    return codes.otp_purpose(call_sid, method, ALICE.account, destination(customer(ALICE), method))


def issue_otp(redis: Any, call_sid: str, method: str, at: float, key: str = KEY) -> str:
    """What `send_code` stores for a code made at time `at`: only the keyed digest."""
    code = codes.make_code(6)
    digest = codes.digest(key, alice_purpose(call_sid, method), code)
    CodeStore(redis).issue_otp(call_sid, method, codes.IssuedCode(digest, at + TEN_MINUTES), 600)
    return code


class FakeVerify:
    """Twilio Verify's `check`, answering as told and remembering what it was asked."""

    def __init__(self, answer: bool | Exception) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    def check(self, to: str, code: str) -> bool:
        self.asked.append((to, code))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def alice_on_file(directory: RedisCustomerDirectory) -> Customer:
    found = directory.get(ALICE.account)
    assert found is not None
    return found


class TestMakeCode:
    def test_draws_from_secrets(self, monkeypatch: pytest.MonkeyPatch) -> None:
        asked: list[int] = []

        def randbelow(bound: int) -> int:
            asked.append(bound)
            return 42

        monkeypatch.setattr(codes.secrets, "randbelow", randbelow)
        assert codes.make_code(6) == "000042"  # leading zeros kept
        assert codes.make_code(8) == "00000042"
        assert asked == [10**6, 10**8]  # every code of that length is possible

    def test_largest_draw_is_all_nines(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(codes.secrets, "randbelow", lambda bound: bound - 1)
        assert codes.make_code(6) == "999999"

    @pytest.mark.parametrize("digits", [6, 7, 8, 9, 10])
    def test_has_the_requested_digits(self, digits: int) -> None:
        for _ in range(50):
            code = codes.make_code(digits)
            assert len(code) == digits
            assert re.fullmatch(r"[0-9]+", code)

    @pytest.mark.parametrize("digits", [0, 4, 5, 11])
    def test_fewer_than_six_or_more_than_ten_digits_is_refused(self, digits: int) -> None:
        with pytest.raises(ValueError, match="6 to 10 digits"):
            codes.make_code(digits)

    def test_roughly_uniform(self) -> None:
        drawn = [codes.make_code(6) for _ in range(2000)]
        assert all(len(c) == 6 and c.isdigit() for c in drawn)
        assert len(set(drawn)) > 1950  # ~2 collisions expected among 10**6 values
        for position in range(6):
            counts = Counter(c[position] for c in drawn)
            assert set(counts) == set("0123456789"), position
            # 200 expected per digit; 100..320 is far outside chance for a fair draw
            assert all(100 <= n <= 320 for n in counts.values()), (position, counts)


class TestDigest:
    CODE = "123456"

    def test_is_a_hex_hmac_without_the_code(self) -> None:
        digest = codes.digest(KEY, alice_purpose(SID_A, "sms_otp"), self.CODE)
        assert re.fullmatch(r"[0-9a-f]{64}", digest)
        assert self.CODE not in digest

    def test_binds_the_call(self) -> None:
        a = codes.digest(KEY, alice_purpose(SID_A, "sms_otp"), self.CODE)
        b = codes.digest(KEY, alice_purpose(SID_B, "sms_otp"), self.CODE)
        assert a != b
        assert not codes.matches(KEY, alice_purpose(SID_B, "sms_otp"), self.CODE, a)

    def test_binds_the_method(self) -> None:
        sms = codes.digest(KEY, alice_purpose(SID_A, "sms_otp"), self.CODE)
        email = codes.digest(KEY, alice_purpose(SID_A, "email_otp"), self.CODE)
        assert sms != email
        assert not codes.matches(KEY, alice_purpose(SID_A, "email_otp"), self.CODE, sms)

    def test_binds_the_key(self) -> None:
        purpose = alice_purpose(SID_A, "sms_otp")
        stored = codes.digest(KEY, purpose, self.CODE)
        assert codes.digest("another-key-0123456789", purpose, self.CODE) != stored
        assert not codes.matches("another-key-0123456789", purpose, self.CODE, stored)
        assert codes.matches(KEY, purpose, self.CODE, stored)

    def test_service_codes_and_one_time_codes_do_not_mix(self) -> None:
        service = codes.digest(KEY, codes.service_purpose(ALICE.account), self.CODE)
        assert not codes.matches(KEY, alice_purpose(SID_A, "sms_otp"), self.CODE, service)
        assert not codes.matches(KEY, codes.service_purpose(BOB.account), self.CODE, service)

    @pytest.mark.parametrize(
        "given",
        [
            None,
            "",
            "12345",  # too short
            "12345678901",  # too long
            "12345a",
            " 123456",
            "123456 ",
            "123456\n",
            "123-456",
            "١٢٣٤٥٦",  # Arabic-Indic digits
            "\uff11\uff12\uff13\uff14\uff15\uff16",  # fullwidth digits
        ],
    )
    def test_matches_refuses_malformed_input(self, given: str | None) -> None:
        purpose = alice_purpose(SID_A, "sms_otp")
        # even a digest made of that very input does not let it in
        stored = codes.digest(KEY, purpose, given or "x")
        assert codes.matches(KEY, purpose, given, stored) is False  # type: ignore[arg-type]

    def test_matches_refuses_when_nothing_is_stored(self) -> None:
        assert codes.matches(KEY, alice_purpose(SID_A, "sms_otp"), self.CODE, None) is False

    def test_expiry_is_exclusive(self) -> None:
        issued = codes.IssuedCode("d" * 64, T0 + TEN_MINUTES)
        assert not issued.expired(T0 + TEN_MINUTES - 1)
        assert issued.expired(T0 + TEN_MINUTES)


class TestCheckCode:
    @pytest.mark.parametrize(
        ("after", "accepted"),
        [(0, True), (599, True), (601, False), (3600, False)],
        ids=["at_once", "9m59s", "10m01s", "1h"],
    )
    def test_valid_for_ten_minutes(
        self,
        redis: Any,
        possession: Possession,
        alice_on_file: Customer,
        now: list[float],
        after: int,
        accepted: bool,
    ) -> None:
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        now[0] = T0 + after
        assert possession.check_code(state(), "sms_otp", alice_on_file, code) is accepted

    def test_used_once(self, redis: Any, possession: Possession, alice_on_file: Customer) -> None:
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        assert possession.check_code(state(), "sms_otp", alice_on_file, code)
        assert not possession.check_code(state(), "sms_otp", alice_on_file, code)
        assert not redis.exists(keys.otp(SID_A, "sms_otp"))

    def test_bound_to_the_call(
        self, redis: Any, possession: Possession, alice_on_file: Customer
    ) -> None:
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        assert not possession.check_code(state(SID_B), "sms_otp", alice_on_file, code)
        # ...even when call B has a code of its own
        issue_otp(redis, SID_B, "sms_otp", at=T0)
        assert not possession.check_code(state(SID_B), "sms_otp", alice_on_file, code)
        assert possession.check_code(state(SID_A), "sms_otp", alice_on_file, code)

    def test_bound_to_the_method(
        self, redis: Any, possession: Possession, alice_on_file: Customer
    ) -> None:
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        assert not possession.check_code(state(), "email_otp", alice_on_file, code)
        # a digest copied under the other method's key is still bound to its purpose
        sms = CodeStore(redis).otp(SID_A, "sms_otp")
        assert isinstance(sms, codes.IssuedCode)
        CodeStore(redis).issue_otp(SID_A, "email_otp", sms, 600)
        assert not possession.check_code(state(), "email_otp", alice_on_file, code)

    def test_wrong_code_leaves_the_right_one_usable(
        self, redis: Any, possession: Possession, alice_on_file: Customer
    ) -> None:
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        for attempt in (wrong, "", None, "12345", code + "0"):
            assert not possession.check_code(state(), "sms_otp", alice_on_file, attempt)
        assert possession.check_code(state(), "sms_otp", alice_on_file, code)

    def test_no_code_issued_never_matches(
        self, possession: Possession, alice_on_file: Customer
    ) -> None:
        assert not possession.check_code(state(), "sms_otp", alice_on_file, "123456")

    def test_without_a_key_nothing_matches(
        self, redis: Any, directory: RedisCustomerDirectory, now: list[float]
    ) -> None:
        keyless = possession_with(redis, directory, now, key=None)
        code = issue_otp(redis, SID_A, "sms_otp", at=T0)
        assert not keyless.check_code(state(), "sms_otp", directory.get(ALICE.account), code)

    def test_a_resend_voids_the_earlier_code(
        self, redis: Any, possession: Possession, alice_on_file: Customer
    ) -> None:
        first = issue_otp(redis, SID_A, "sms_otp", at=T0)
        second = issue_otp(redis, SID_A, "sms_otp", at=T0 + 30)
        if first != second:  # one chance in a million they are equal
            assert not possession.check_code(state(), "sms_otp", alice_on_file, first)
        assert possession.check_code(state(), "sms_otp", alice_on_file, second)


class TestTwilioVerifyMark:
    """When Twilio Verify made the code, only its mark is stored and Verify is asked."""

    def mark(self, redis: Any) -> None:
        CodeStore(redis).issue_otp(SID_A, "sms_otp", VERIFY_MARK, 600)

    def test_approved_is_accepted_once(
        self, redis: Any, directory: RedisCustomerDirectory, now: list[float]
    ) -> None:
        fake = FakeVerify(True)
        verified = possession_with(redis, directory, now, verify={"sms_otp": fake})
        self.mark(redis)
        alice = directory.get(ALICE.account)
        assert verified.check_code(state(), "sms_otp", alice, "123456")
        assert fake.asked == [(ALICE.phone, "123456")]  # the number on file, not the caller
        assert not verified.check_code(state(), "sms_otp", alice, "123456")
        assert len(fake.asked) == 1  # the mark is gone: Verify is not even asked again

    def test_not_approved_is_refused_and_the_mark_stays(
        self, redis: Any, directory: RedisCustomerDirectory, now: list[float]
    ) -> None:
        verified = possession_with(redis, directory, now, verify={"sms_otp": FakeVerify(False)})
        self.mark(redis)
        assert not verified.check_code(state(), "sms_otp", directory.get(ALICE.account), "1")
        assert CodeStore(redis).otp(SID_A, "sms_otp") == VERIFY_MARK

    @pytest.mark.parametrize(
        "failure",
        [
            DeliveryError("Verify check failed"),
            TransientDeliveryError("Verify check failed: network error (ReadTimeout)"),
            PermanentDeliveryError("Verify check failed: Twilio error 20003 (HTTP 401)"),
        ],
    )
    def test_an_unreachable_verify_fails_closed(
        self,
        redis: Any,
        directory: RedisCustomerDirectory,
        now: list[float],
        failure: DeliveryError,
    ) -> None:
        """Nobody gets in, and the caller is not blamed: the factor is unavailable."""
        verified = possession_with(redis, directory, now, verify={"sms_otp": FakeVerify(failure)})
        self.mark(redis)
        with pytest.raises(FactorUnavailable):
            verified.check_code(state(), "sms_otp", directory.get(ALICE.account), "123456")
        assert CodeStore(redis).otp(SID_A, "sms_otp") == VERIFY_MARK

    def test_a_mark_without_verify_configured_fails_closed(
        self, redis: Any, possession: Possession, alice_on_file: Customer
    ) -> None:
        self.mark(redis)
        assert possession.check_code(state(), "sms_otp", alice_on_file, "123456") is False

    @pytest.mark.parametrize("answer", [None, ""])
    def test_no_answer_or_no_customer_never_asks_verify(
        self, redis: Any, directory: RedisCustomerDirectory, now: list[float], answer: str | None
    ) -> None:
        fake = FakeVerify(True)
        verified = possession_with(redis, directory, now, verify={"sms_otp": fake})
        self.mark(redis)
        assert not verified.check_code(state(), "sms_otp", directory.get(ALICE.account), answer)
        assert not verified.check_code(state(UNKNOWN_ACCOUNT), "sms_otp", None, "123456")
        assert fake.asked == []
