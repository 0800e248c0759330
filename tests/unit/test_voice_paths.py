"""A path under /voice that we do not serve still answers Twilio in TwiML (SECURITY 1, 27).

Twilio cannot speak an HTML 404: a mistyped webhook URL or a trailing slash would play its stock
error to the caller. Signed, such a request gets the apology (200 TwiML); unsigned, the 403 every
unsigned webhook gets. Neither changes anything.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from ivr.simulator import Hangup, Say, parse_twiml
from tests.conftest import BASE_URL, TOKEN
from tests.support import redis_snapshot, sign

PARAMS = {"CallSid": "CA" + "3d" * 16, "From": "+14155550100", "To": "+15005550001"}
UNKNOWN = ["/voice/", "/voice/nope", "/voice/step/", "/voice/step/pin/extra", "/voice/poll/"]


@pytest.mark.parametrize("path", UNKNOWN)
def test_signed_request_to_an_unknown_path_gets_the_apology(
    client: FlaskClient, redis: Any, path: str
) -> None:
    response = client.post(path, data=PARAMS, headers=sign(TOKEN, BASE_URL + path, PARAMS))
    assert response.status_code == 200
    assert response.mimetype == "application/xml"
    verbs = parse_twiml(response.data.decode())
    assert isinstance(verbs[0], Say) and verbs[0].text.startswith("We are sorry")
    assert verbs[-1] == Hangup()
    assert redis_snapshot(redis) == {}


@pytest.mark.parametrize("path", UNKNOWN)
def test_unsigned_request_to_an_unknown_path_is_403(
    client: FlaskClient, redis: Any, path: str
) -> None:
    assert client.post(path, data=PARAMS).status_code == 403
    wrong = sign("not-the-token", BASE_URL + path, PARAMS)
    assert client.post(path, data=PARAMS, headers=wrong).status_code == 403
    assert redis_snapshot(redis) == {}


def test_the_served_paths_are_unchanged(client: FlaskClient, redis: Any) -> None:
    response = client.post("/voice", data=PARAMS, headers=sign(TOKEN, BASE_URL + "/voice", PARAMS))
    assert b"Welcome to Example Bank" in response.data
