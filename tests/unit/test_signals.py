"""Risk signals, never factors (issue 7, item 6): `StirVerstat` parsed tolerantly into the call's
attestation, Lookup answers judged, and no signal ever proves anything.

The `StirVerstat` values are those of shared/reference/twilio-facts.md: every verdict, with and
without each suffix Twilio adds.
"""

from __future__ import annotations

from typing import Any

import pytest

from ivr.auth.signals import attestation, line_type, sim_swap, sms_refusal
from ivr.flows.engine import CallState
from ivr.runtime import Runtime
from tests.conftest import ALICE, PlayerFactory
from tests.support import STIR_VERSTATS, audit_events, pin_caller

DAY = 86400
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
WEEK = 7 * DAY


class TestStirVerstat:
    @pytest.mark.parametrize(("raw", "value", "path"), STIR_VERSTATS)
    def test_every_reference_value_parses(self, raw: str, value: str, path: str | None) -> None:
        expected = {"attestation": value} | ({"attestation_path": path} if path else {})
        assert attestation(raw) == expected

    @pytest.mark.parametrize(
        "raw",
        [
            "tn-validation-passed-a",
            " TN-Validation-Passed-A\n",
            "TN-VALIDATION-PASSED-A-PASSTHROUGH",
        ],
    )
    def test_case_and_surrounding_space_do_not_matter(self, raw: str) -> None:
        assert attestation(raw)["attestation"] == "A"

    @pytest.mark.parametrize(
        "raw",
        [
            None,
            "",
            "TN-Validation-Passed",  # a pass with no level is no documented value
            "TN-Validation-Passed-D",
            "TN-Validation-Passed-A-Forwarded",
            "TN-Validation-Passed-AB",
            "A",
            "passed",
            "X" * 10_000,
            "TN-Validation-Passed-A" + "-Diverted" * 50,  # longer than any real value
        ],
    )
    def test_anything_else_is_absent_never_attested(self, raw: str | None) -> None:
        assert attestation(raw) == {"attestation": "absent"}


class TestLookupAnswers:
    def test_line_type(self) -> None:
        assert line_type({"line_type_intelligence": {"type": "landline", "error_code": None}}) == (
            "landline"
        )
        assert line_type({"line_type_intelligence": {"type": "mobile"}}) == "mobile"
        assert line_type({"line_type_intelligence": {"type": None, "error_code": 60600}}) == (
            "unknown"
        )
        assert line_type({"line_type_intelligence": None}) == "unknown"
        assert line_type({}) == "unknown"
        assert line_type({"line_type_intelligence": {"type": "<script>"}}) == "unknown"

    @pytest.mark.parametrize(
        ("last", "expected"),
        [
            ({"last_sim_swap_date": "2027-01-14T08:00:00Z"}, "recent"),  # a day ago
            ({"last_sim_swap_date": "2027-01-01T08:00:00Z"}, "none"),  # two weeks ago
            ({"last_sim_swap_date": None, "swapped_period": "PT48H", "swapped_in_period": True},
             "recent"),
            ({"last_sim_swap_date": None, "swapped_period": "PT48H", "swapped_in_period": False},
             "unknown"),  # not in two days says nothing about our seven
            ({"swapped_period": "P30D", "swapped_in_period": False}, "none"),
            ({"swapped_period": "P30D", "swapped_in_period": True}, "unknown"),
            ({"swapped_period": "soon", "swapped_in_period": True}, "unknown"),
            ({"last_sim_swap_date": "yesterday"}, "unknown"),
            ({"last_sim_swap_date": "2027-01-14T08:00:00"}, "unknown"),  # no zone: unreadable
        ],
    )  # fmt: skip
    def test_sim_swap_within_the_window(self, last: dict[str, Any], expected: str) -> None:
        assert sim_swap({"sim_swap": {"last_sim_swap": last}}, WEEK, NOW) == expected

    def test_sim_swap_unknown_without_an_answer(self) -> None:
        assert sim_swap({}, WEEK, NOW) == "unknown"
        assert sim_swap({"sim_swap": {"error_code": 60607}}, WEEK, NOW) == "unknown"
        assert sim_swap({"sim_swap": {"last_sim_swap": None}}, WEEK, NOW) == "unknown"

    def test_the_window_decides(self) -> None:
        two_days_ago = {
            "sim_swap": {"last_sim_swap": {"last_sim_swap_date": "2027-01-13T08:00:00Z"}}
        }
        assert sim_swap(two_days_ago, WEEK, NOW) == "recent"
        assert sim_swap(two_days_ago, DAY, NOW) == "none"

    def test_only_a_landline_or_a_recent_swap_refuses_sms(self) -> None:
        assert sms_refusal({"line_type": "landline", "sim_swap": "unknown"}) == "landline"
        assert sms_refusal({"line_type": "mobile", "sim_swap": "recent"}) == "recent SIM change"
        assert sms_refusal({"line_type": "unknown", "sim_swap": "unknown"}) is None
        assert sms_refusal({"line_type": "nonFixedVoip", "sim_swap": "none"}) is None
        assert sms_refusal({}) is None


class TestNeverAFactor:
    def test_attestation_changes_no_assurance(self) -> None:
        for signals in ({"attestation": "A"}, {"attestation": "failed"}, {}):
            for proofs in ([], ["pin"], ["pin", "sms_otp"]):
                state = CallState("CA1", "+1", "x", account="1", proofs=proofs, signals=signals)
                bare = CallState("CA1", "+1", "x", account="1", proofs=list(proofs))
                assert state.assurance == bare.assurance

    def test_an_a_attested_call_from_the_number_on_file_still_authenticates(
        self, player: PlayerFactory, runtime: Runtime, customers: Any
    ) -> None:
        """Full attestation, from Alice's own number: she still keys her account and PIN, and
        the attestation is in the call's state and its audit trail, nothing more."""
        call = player(
            ALICE.phone, pause_scale=0, extra_params={"StirVerstat": "TN-Validation-Passed-A"}
        )
        result = call.play(pin_caller(ALICE.account, ALICE.pin))
        assert result.outcome == "enqueued", result.transcript()
        assert result.said("Enter your PIN")
        stored = runtime.sessions.load(call.call_sid)
        assert stored is not None
        assert stored.state.signals == {"attestation": "A"}
        (started,) = [
            e for e in audit_events(runtime.redis, call.call_sid) if e["event"] == "call_started"
        ]
        assert started["detail"] == "attestation=A"

    def test_a_call_without_stir_verstat_is_absent(
        self, player: PlayerFactory, runtime: Runtime, customers: Any
    ) -> None:
        call = player(ALICE.phone, pause_scale=0)
        call.play(pin_caller(ALICE.account, ALICE.pin))
        stored = runtime.sessions.load(call.call_sid)
        assert stored is not None
        assert stored.state.signals == {"attestation": "absent"}
