"""Service codes: issued for an account, and the API that issues them, failing closed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from flask.testing import FlaskClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from ivr.auth import codes
from ivr.auth.possession import (
    Possession,
)
from ivr.runtime import Runtime
from ivr.store import keys
from ivr.store.audit import AuditLog
from ivr.store.codes import CodeStore
from ivr.store.customers import RedisCustomerDirectory
from tests.conftest import (
    ALICE,
    API_TOKEN,
    BOB,
    DemoCustomer,
    make_app,
    possession_with,
)
from tests.support import (
    DAY,
    KEY,
    T0,
    UNKNOWN_ACCOUNT,
    assert_not_in_redis,
)


class TestServiceCodes:
    def test_has_the_service_code_length(self, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        assert re.fullmatch(r"[0-9]{8}", code)

    def test_stored_only_as_a_digest(self, redis: Any, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        assert_not_in_redis(redis, code)
        stored = CodeStore(redis).service_code(ALICE.account)
        assert stored is not None
        assert stored.digest == codes.digest(KEY, codes.service_purpose(ALICE.account), code)
        assert 0 < redis.ttl(keys.service_code(ALICE.account)) <= DAY

    def test_accepted_once(self, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        assert possession.check_service_code(ALICE.account, code)
        assert not possession.check_service_code(ALICE.account, code)

    def test_bound_to_the_account(self, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        assert not possession.check_service_code(BOB.account, code)
        assert possession.check_service_code(ALICE.account, code)

    def test_wrong_code_leaves_the_right_one_usable(self, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        for attempt in ("00000000", "", None, code[:-1], code + "1"):
            assert not possession.check_service_code(ALICE.account, attempt)
        assert possession.check_service_code(ALICE.account, code)

    @pytest.mark.parametrize(
        ("after", "accepted"),
        [(0, True), (DAY - 1, True), (DAY + 1, False)],
        ids=["at_once", "23h59m59s", "24h00m01s"],
    )
    def test_valid_for_a_day(
        self, possession: Possession, now: list[float], after: int, accepted: bool
    ) -> None:
        code = possession.issue_service_code(ALICE.account)
        now[0] = T0 + after
        assert possession.check_service_code(ALICE.account, code) is accepted

    def test_a_new_code_replaces_the_old(self, possession: Possession, now: list[float]) -> None:
        old = possession.issue_service_code(ALICE.account)
        now[0] += 60
        new = possession.issue_service_code(ALICE.account)
        if old != new:  # one chance in 10**8 they are equal
            assert not possession.check_service_code(ALICE.account, old)
        assert possession.check_service_code(ALICE.account, new)

    def test_needs_the_code_key(
        self, redis: Any, directory: RedisCustomerDirectory, now: list[float]
    ) -> None:
        with pytest.raises(RuntimeError, match="IVR_CODE_KEY"):
            possession_with(redis, directory, now, key=None).issue_service_code(ALICE.account)

    def test_issue_is_audited_without_the_code(self, redis: Any, possession: Possession) -> None:
        code = possession.issue_service_code(ALICE.account)
        events = AuditLog(redis).recent()
        assert events[0]["event"] == "service_code_issued"
        assert events[0]["account"] == ALICE.account
        assert code not in json.dumps(events)


def api_post(client: FlaskClient, authorization: str | None = None, **kwargs: Any) -> Any:
    headers = {} if authorization is None else {"Authorization": authorization}
    return client.post("/api/service-codes", headers=headers, **kwargs)


AUTH = f"Bearer {API_TOKEN}"


class TestServiceCodeApi:
    @pytest.mark.parametrize(
        "authorization",
        [
            None,
            "",
            "Bearer",
            "Bearer ",
            "Bearer wrong-token-0123456789",
            f"Bearer {API_TOKEN}x",
            f"Bearer {API_TOKEN[:-1]}",
            f"bearer {API_TOKEN}",
            API_TOKEN,
            f"Basic {API_TOKEN}",
            f"Bearer {API_TOKEN} ",
            "Bearer caf\xe9",
        ],
    )
    def test_401_without_the_token(
        self,
        client: FlaskClient,
        redis: Any,
        customers: dict[str, DemoCustomer],
        authorization: str | None,
    ) -> None:
        reference = api_post(client, "Bearer nope", json={"account": ALICE.account})
        response = api_post(client, authorization, json={"account": ALICE.account})
        assert response.status_code == 401
        assert response.get_json() == reference.get_json()
        assert "IVR_API_TOKEN" in response.get_json()["error"]
        assert API_TOKEN not in response.get_data(as_text=True)
        assert not redis.exists(keys.service_code(ALICE.account))

    def test_401_comes_before_reading_the_body(self, client: FlaskClient) -> None:
        response = api_post(client, "Bearer nope", data="{not json", content_type="text/plain")
        assert response.status_code == 401

    def test_no_token_configured_refuses_everyone(
        self, redis: Any, customers: dict[str, DemoCustomer]
    ) -> None:
        from tests.conftest import make_app

        app = make_app(redis, api_token=None)
        response = api_post(app.test_client(), AUTH, json={"account": ALICE.account})
        assert response.status_code == 401
        assert not redis.exists(keys.service_code(ALICE.account))

    @pytest.mark.parametrize(
        "body",
        [
            {"data": "{not json", "content_type": "application/json"},
            {"data": '{"account": "12345678"}', "content_type": "text/plain"},
            {"json": ["12345678"]},
            {"json": "12345678"},
            {"json": {}},
            {"json": {"account": None}},
            {"json": {"account": 12345678}},
            {"json": {"account": "12345"}},
            {"json": {"account": "1234567890123"}},
            {"json": {"account": "1234567a"}},
            {"json": {"account": "12345678\n"}},
            {"json": {"account": "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18"}},
        ],
    )
    def test_400_on_bad_json_or_account(
        self, client: FlaskClient, redis: Any, customers: dict[str, DemoCustomer], body: Any
    ) -> None:
        response = api_post(client, AUTH, **body)
        assert response.status_code == 400
        assert "account" in response.get_json()["error"]
        assert not list(redis.scan_iter(keys.service_code("*")))

    def test_404_unknown_account(
        self, client: FlaskClient, redis: Any, customers: dict[str, DemoCustomer]
    ) -> None:
        response = api_post(client, AUTH, json={"account": UNKNOWN_ACCOUNT})
        assert response.status_code == 404
        assert not list(redis.scan_iter(keys.service_code("*")))

    def test_201_returns_a_code_once_usable(
        self,
        client: FlaskClient,
        redis: Any,
        runtime: Runtime,
        customers: dict[str, DemoCustomer],
    ) -> None:
        response = api_post(client, AUTH, json={"account": ALICE.account})
        assert response.status_code == 201
        assert response.headers["Cache-Control"] == "no-store"
        body = response.get_json()
        assert body["account"] == ALICE.account
        assert body["expires_in"] == runtime.settings.service_code_ttl
        code = body["code"]
        assert re.fullmatch(r"[0-9]{8}", code)
        assert_not_in_redis(redis, code)
        assert not runtime.possession.check_service_code(BOB.account, code)
        assert runtime.possession.check_service_code(ALICE.account, code)
        assert not runtime.possession.check_service_code(ALICE.account, code)

    def test_a_second_request_replaces_the_first_code(
        self, client: FlaskClient, runtime: Runtime, customers: dict[str, DemoCustomer]
    ) -> None:
        first = api_post(client, AUTH, json={"account": ALICE.account}).get_json()["code"]
        second = api_post(client, AUTH, json={"account": ALICE.account}).get_json()["code"]
        if first != second:
            assert not runtime.possession.check_service_code(ALICE.account, first)
        assert runtime.possession.check_service_code(ALICE.account, second)


class TestServiceCodeApiFailsClosed:
    def test_redis_down_is_a_json_503_not_a_500(self, outbox_path: Path) -> None:
        from ivr.store.server import find_free_port

        down = redis_lib.Redis(port=find_free_port(), socket_connect_timeout=0.2,
                               socket_timeout=0.2, retry=Retry(NoBackoff(), 0))  # fmt: skip
        client = make_app(down, outbox=outbox_path).test_client()
        response = client.post(
            "/api/service-codes",
            json={"account": ALICE.account},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        assert response.status_code == 503
        assert response.get_json() == {
            "error": "service codes are unavailable right now; try again shortly"
        }
