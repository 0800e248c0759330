"""The signature is checked before anything else is judged (SECURITY 1): a forged webhook is a
403 whatever its body holds, a repeated parameter included, and leaves no warning about it."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from tests.conftest import ALICE, BASE_URL
from tests.support import SIGNATURE_HEADER

SID = "CA" + "3f" * 16


def repeating() -> MultiDict[str, str]:
    form = MultiDict([("CallSid", SID), ("From", ALICE.phone), ("Digits", "583920")])
    form.add("Digits", "739154")
    return form


def test_a_forged_request_that_repeats_a_parameter_is_403(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    form = repeating()
    forged = RequestValidator("not-our-auth-token").compute_signature(BASE_URL + "/voice", form)
    response = client.post("/voice", data=form, headers={SIGNATURE_HEADER: forged})
    assert response.status_code == 403
    warnings = [r.getMessage() for r in caplog.records if r.name == "ivr.security"]
    assert not any("repeats" in w for w in warnings), warnings
