"""How much a caller has proved: derived from the proofs of this call, never set as a flag."""

from __future__ import annotations

import pytest

from ivr.assurance import METHOD_FACTORS, METHODS, Assurance, Factor, derive, factor_of

KNOWLEDGE = ("pin", "passcode")
POSSESSION = ("sms_otp", "email_otp", "callback", "service_code")


class TestDerive:
    @pytest.mark.parametrize(
        "proofs",
        [[], ["pin"], ["pin", "sms_otp"], list(METHODS)],
        ids=["none", "pin", "2fa", "all"],
    )
    def test_not_identified_is_none_whatever_was_proved(self, proofs: list[str]) -> None:
        assert derive(False, proofs) is Assurance.none

    def test_identified_without_proofs(self) -> None:
        assert derive(True, []) is Assurance.identified

    @pytest.mark.parametrize("method", METHODS)
    def test_any_single_method_is_one_factor(self, method: str) -> None:
        assert derive(True, [method]) is Assurance.one_factor

    def test_pin_is_one_factor(self) -> None:
        assert derive(True, ["pin"]) is Assurance.one_factor

    @pytest.mark.parametrize("secret", KNOWLEDGE)
    @pytest.mark.parametrize("possession", POSSESSION)
    def test_secret_and_possession_are_two_factor(self, secret: str, possession: str) -> None:
        assert derive(True, [secret, possession]) is Assurance.two_factor
        assert derive(True, [possession, secret]) is Assurance.two_factor

    def test_two_knowledge_factors_are_still_one_factor(self) -> None:
        assert derive(True, ["pin", "passcode"]) is Assurance.one_factor

    def test_two_possession_factors_are_still_one_factor(self) -> None:
        assert derive(True, ["sms_otp", "email_otp", "callback"]) is Assurance.one_factor

    def test_the_same_proof_twice_counts_once(self) -> None:
        assert derive(True, ["pin", "pin"]) is Assurance.one_factor

    def test_any_iterable_of_proofs(self) -> None:
        assert derive(True, (m for m in ["pin", "sms_otp"])) is Assurance.two_factor
        assert derive(True, frozenset({"passcode", "callback"})) is Assurance.two_factor

    def test_unknown_method_proves_nothing(self) -> None:
        # Fail closed: a method nobody declared must never raise the level.
        try:
            level = derive(True, ["fingerprint"])
        except KeyError:
            return  # refusing outright is fine too
        assert level is Assurance.identified


class TestOrdering:
    def test_levels_are_ordered(self) -> None:
        assert Assurance.none < Assurance.identified < Assurance.one_factor < Assurance.two_factor

    @pytest.mark.parametrize(
        ("have", "need", "met"),
        [
            ("two_factor", "one_factor", True),
            ("one_factor", "one_factor", True),
            ("identified", "one_factor", False),
            ("one_factor", "two_factor", False),
            ("none", "identified", False),
        ],
    )
    def test_requirement_is_met_at_or_above(self, have: str, need: str, met: bool) -> None:
        assert (Assurance.parse(have) >= Assurance.parse(need)) is met

    @pytest.mark.parametrize("name", ["none", "identified", "one_factor", "two_factor"])
    def test_parse_round_trips_names(self, name: str) -> None:
        assert Assurance.parse(name).name == name

    @pytest.mark.parametrize("name", ["", "two-factor", "TWO_FACTOR", "admin"])
    def test_parse_refuses_unknown_names(self, name: str) -> None:
        with pytest.raises(KeyError):
            Assurance.parse(name)


class TestFactors:
    @pytest.mark.parametrize("method", KNOWLEDGE)
    def test_secrets_are_knowledge(self, method: str) -> None:
        assert factor_of(method) is Factor.knowledge

    @pytest.mark.parametrize("method", POSSESSION)
    def test_codes_and_callbacks_are_possession(self, method: str) -> None:
        assert factor_of(method) is Factor.possession

    def test_every_method_has_exactly_one_factor(self) -> None:
        assert set(METHODS) == set(KNOWLEDGE) | set(POSSESSION)
        assert set(METHOD_FACTORS) == set(METHODS)
