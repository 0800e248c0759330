"""Whole calls that step up with a service code from the API."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient

from ivr.runtime import Runtime
from ivr.simulator import CallPlayer, Keys
from tests.conftest import (
    ALICE,
    API_TOKEN,
    BOB,
    up_to_card_check,
)
from tests.support import (
    CARD_CHECK,
    CODE_WRONG,
    StrictTurns,
    assert_card_services,
    assert_never_enqueued,
    auth_outcomes,
    code_nowhere_but_digits,
    heard_in_order,
    pauses,
    silent,
)


def issue_service_code(client: FlaskClient, account: str = ALICE.account) -> str:
    response = client.post(
        "/api/service-codes",
        json={"account": account},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["code"])


class TestServiceCode:
    def test_code_from_the_api_reaches_card_services(
        self, caller: Callable[..., CallPlayer], client: FlaskClient, runtime: Runtime
    ) -> None:
        code = issue_service_code(client)
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("4")),
            ("service_code", Keys(code + "#")),
        )
        result = caller().play(turns)
        assert turns.done
        assert_card_services(result)
        assert pauses(result) == 0  # nothing to deliver, nobody holds
        code_nowhere_but_digits(result, code)
        assert auth_outcomes(runtime, "service_code") == ["success"]

    def test_a_service_code_works_once(
        self, caller: Callable[..., CallPlayer], client: FlaskClient
    ) -> None:
        code = issue_service_code(client)
        steps = (*up_to_card_check(), ("card_check", Keys("4")), ("service_code", Keys(code + "#")))
        assert_card_services(caller().play(StrictTurns(*steps)))
        again = StrictTurns(*steps, *silent("card_check"))
        result = caller().play(again)
        assert again.done
        assert heard_in_order(result, CODE_WRONG, CARD_CHECK)
        assert_never_enqueued(result)

    def test_another_accounts_service_code_fails(
        self, caller: Callable[..., CallPlayer], client: FlaskClient
    ) -> None:
        bobs = issue_service_code(client, BOB.account)
        turns = StrictTurns(
            *up_to_card_check(),
            ("card_check", Keys("4")),
            ("service_code", Keys(bobs + "#")),
            *silent("card_check"),
        )
        result = caller().play(turns)
        assert CODE_WRONG in result.heard
        assert_never_enqueued(result)
