"""GET /api/calls/<ref>: what an agent's screen learns about a live call, played in-process.

Calls of the default flow are played by the simulator against the app on fakeredis; the agent
reads the API with the Flask client at the prompts a caller reaches (before any proof, after a
PIN, in the card-services queue at two factors). SECURITY 22.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.test import TestResponse

from ivr.runtime import Runtime
from ivr.simulator import Gather, Keys
from ivr.store.server import find_free_port
from tests.conftest import ALICE, API_TOKEN, FLOWS_DIR, PlayerFactory, make_app
from tests.support import audit_events, sign, step_of

UNKNOWN_ACCOUNT = "55500555"
STRANGER = "+14155550142"  # no account has this number
Answer = Keys | None | Callable[[], Keys | None]


class Script:
    """The caller's answers by step, in order; `at(step, fn)` runs `fn` when the IVR asks at
    `step` (the call waiting on the caller), before the caller answers."""

    def __init__(self, *turns: tuple[str, Answer]) -> None:
        self.turns = list(turns)
        self.hooks: dict[str, Callable[[], None]] = {}

    def at(self, step: str, hook: Callable[[], None]) -> Script:
        self.hooks[step] = hook
        return self

    def __call__(self, gather: Gather, heard: list[str]) -> Keys | None:
        step = step_of(gather)
        assert self.turns, f"unscripted question at {step}; heard {heard[-1:]}"
        expected, answer = self.turns.pop(0)
        assert step == expected, f"asked at {step}, expected {expected}; heard {heard[-1:]}"
        if step in self.hooks:
            self.hooks.pop(step)()
        return answer() if callable(answer) else answer


@pytest.fixture
def tokens(runtime: Runtime) -> dict[str, str]:
    """One agent per role of the shipped policy, by role."""
    names = {"agent": "ann", "specialist": "sam", "supervisor": "sue"}
    return {role: runtime.agents.add(name, role) for role, name in names.items()}


def read(client: FlaskClient, ref: str, token: str | None) -> TestResponse:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get(f"/api/calls/{ref}", headers=headers)


def ref_of(runtime: Runtime, call_sid: str) -> str:
    stored = runtime.sessions.load(call_sid)
    assert stored is not None and stored.state.ref
    return stored.state.ref


def reads(client: FlaskClient, runtime: Runtime, call_sid: str, tokens: dict[str, str]) -> dict:
    """What each role reads about the call now, by role; None where the read is refused."""
    ref = ref_of(runtime, call_sid)
    out = {}
    for role, token in tokens.items():
        response = read(client, ref, token)
        assert response.status_code in (200, 404), (role, response.get_json())
        out[role] = response.get_json() if response.status_code == 200 else None
    return out


def issue_service_code(client: FlaskClient) -> str:
    response = client.post(
        "/api/service-codes",
        json={"account": ALICE.account},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert response.status_code == 201
    return str(response.get_json()["code"])


def to_card_services(client: FlaskClient) -> Script:
    """PIN, then a card change proved with a service code: card-services at two factors."""
    code = issue_service_code(client)
    return Script(
        ("identify", Keys(ALICE.account + "#")),
        ("choose_method", Keys("1")),
        ("pin", Keys(ALICE.pin + "#")),
        ("main_menu", Keys("2")),
        ("card_check", Keys("4")),
        ("service_code", Keys(code + "#")),
    )


def enqueued_call(player: PlayerFactory, client: FlaskClient, **options: Any) -> tuple[Any, Any]:
    """A call left waiting in card-services (Twilio has not said it ended)."""
    caller = player(send_status=False, pause_scale=0, **options)
    result = caller.play(to_card_services(client))
    assert result.outcome == "enqueued" and result.queue == "card-services", result.transcript()
    return caller, result


class TestBeforeAuthentication:
    def test_nothing_is_revealed_and_no_claim_tells_from_another(
        self,
        client: FlaskClient,
        runtime: Runtime,
        customers: Any,
        tokens: dict[str, str],
        player: PlayerFactory,
    ) -> None:
        """Alice's account, an account that does not exist, the caller ID of a stranger: each
        after one wrong PIN, as every role sees them. Identical but for the reference."""
        seen: list[dict] = []

        def claim(keys: str, from_number: str) -> None:
            caller = player(from_number=from_number, send_status=False, pause_scale=0)
            script = Script(
                ("identify", Keys(keys)),
                ("choose_method", Keys("1")),
                ("pin", Keys("111111#")),
                ("choose_method", None),
                ("choose_method", None),
                ("choose_method", None),
            )
            caller.play(script.at("choose_method", lambda: seen.extend(by_role(caller))))

        def by_role(caller: Any) -> list[dict]:
            views = reads(client, runtime, caller.call_sid, tokens).values()
            return [{k: v for k, v in view.items() if k != "ref"} for view in views]

        claim(ALICE.account + "#", STRANGER)
        claim(UNKNOWN_ACCOUNT + "#", STRANGER)
        claim("*#", STRANGER)
        claim("*#", ALICE.phone)  # Alice's own number, and a wrong PIN
        assert len(seen) == 12
        assert all(view == seen[0] for view in seen)
        assert seen[0] == {
            "authenticated": False,
            "assurance": "none",
            "queue": None,
            "methods": [],
            "signals": {},
            "fields": {},
        }


class TestAfterAuthentication:
    def test_one_factor_shows_only_first_name_and_status(
        self,
        client: FlaskClient,
        runtime: Runtime,
        customers: Any,
        tokens: dict[str, str],
        player: PlayerFactory,
    ) -> None:
        caller = player(send_status=False, pause_scale=0)
        seen: dict[str, dict] = {}
        script = Script(
            ("identify", Keys(ALICE.account + "#")),
            ("choose_method", Keys("1")),
            ("pin", Keys(ALICE.pin + "#")),
            ("main_menu", Keys("1")),
        ).at("main_menu", lambda: seen.update(reads(client, runtime, caller.call_sid, tokens)))
        assert caller.play(script).queue == "balances"
        for role in ("agent", "specialist", "supervisor"):
            assert seen[role]["authenticated"] is True
            assert seen[role]["assurance"] == "one_factor"
            assert seen[role]["queue"] is None  # still in the IVR
            assert [m["method"] for m in seen[role]["methods"]] == ["pin"]
            assert seen[role]["fields"] == {"first_name": "Alice", "account_status": "active"}

    def test_at_two_factors_a_specialist_sees_more_than_an_agent(
        self,
        client: FlaskClient,
        runtime: Runtime,
        customers: Any,
        tokens: dict[str, str],
        player: PlayerFactory,
    ) -> None:
        caller, _ = enqueued_call(player, client)
        seen = reads(client, runtime, caller.call_sid, tokens)
        assert seen["agent"] is None  # card-services is not an agent's queue
        served = [seen["specialist"], seen["supervisor"]]
        assert {view["assurance"] for view in served} == {"two_factor"}
        assert {view["queue"] for view in served} == {"card-services"}
        assert [m["method"] for m in seen["specialist"]["methods"]] == ["pin", "service_code"]
        assert seen["specialist"]["fields"] == {
            "first_name": "Alice",
            "account_status": "active",
            "name": "Alice Example",
            "account": ALICE.account,
            "address": ALICE.address,
        }
        assert seen["supervisor"]["fields"] == {
            **seen["specialist"]["fields"],
            "email": ALICE.email,
            "phone": ALICE.phone,
        }

    def test_a_locked_factor_shows_as_a_locked_account(
        self,
        client: FlaskClient,
        runtime: Runtime,
        customers: Any,
        tokens: dict[str, str],
        player: PlayerFactory,
    ) -> None:
        runtime.redis.set(f"ivr:failures:{ALICE.account}:passcode", 10)
        caller, _ = enqueued_call(player, client)
        fields = reads(client, runtime, caller.call_sid, tokens)["specialist"]["fields"]
        assert fields["account_status"] == "locked"

    def test_answers_are_never_cached(
        self,
        client: FlaskClient,
        runtime: Runtime,
        customers: Any,
        tokens: dict[str, str],
        player: PlayerFactory,
    ) -> None:
        caller, _ = enqueued_call(player, client)
        response = read(client, ref_of(runtime, caller.call_sid), tokens["specialist"])
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"


class TestRefusals:
    """Every refusal is one and the same 404, whatever its reason."""

    @pytest.fixture
    def call(
        self,
        client: FlaskClient,
        runtime: Runtime,
        customers: Any,
        tokens: dict[str, str],
        player: PlayerFactory,
    ) -> tuple[str, str]:
        caller, _ = enqueued_call(player, client)
        return caller.call_sid, ref_of(runtime, caller.call_sid)

    @staticmethod
    def assert_refused(response: TestResponse) -> None:
        assert response.status_code == 404
        assert response.get_json() == {"error": "no such call"}
        assert response.headers["Cache-Control"] == "no-store"

    def test_a_call_twilio_says_is_over(
        self, client: FlaskClient, tokens: dict[str, str], call: tuple[str, str], app: Flask
    ) -> None:
        call_sid, ref = call
        assert read(client, ref, tokens["specialist"]).status_code == 200
        params = {"CallSid": call_sid, "CallStatus": "completed", "From": ALICE.phone}
        url = "http://localhost/voice/status"
        posted = client.post("/voice/status", data=params, headers=sign(_token(app), url, params))
        assert posted.status_code == 204
        for token in tokens.values():
            self.assert_refused(read(client, ref, token))

    def test_a_call_that_hung_up_in_the_ivr(
        self,
        client: FlaskClient,
        runtime: Runtime,
        customers: Any,
        tokens: dict[str, str],
        player: PlayerFactory,
    ) -> None:
        caller = player(send_status=False, pause_scale=0)
        script = Script(
            ("identify", Keys(ALICE.account + "#")),
            ("choose_method", Keys("1")),
            ("pin", Keys("111111#")),
            ("choose_method", Keys("1")),
            ("pin", Keys("222222#")),
        )
        assert caller.play(script).outcome == "hung_up"
        self.assert_refused(read(client, ref_of(runtime, caller.call_sid), tokens["supervisor"]))

    def test_tokens_that_are_wrong_rotated_or_removed(
        self, client: FlaskClient, runtime: Runtime, tokens: dict[str, str], call: tuple[str, str]
    ) -> None:
        _, ref = call
        self.assert_refused(read(client, ref, None))
        self.assert_refused(read(client, ref, "A" * 43))
        self.assert_refused(read(client, ref, API_TOKEN))  # the service-code API's token
        response = client.get(f"/api/calls/{ref}", headers={"Authorization": tokens["agent"]})
        self.assert_refused(response)  # no "Bearer"
        runtime.agents.rotate("sam")
        self.assert_refused(read(client, ref, tokens["specialist"]))
        runtime.agents.remove("sue")
        self.assert_refused(read(client, ref, tokens["supervisor"]))
        assert read(client, ref, runtime.agents.add("sid", "specialist")).status_code == 200

    @pytest.mark.parametrize("ref", ["nosuchcallatall0", "x", "A" * 200, "..%2F..%2Fetc"])
    def test_a_reference_that_is_no_call(
        self, client: FlaskClient, tokens: dict[str, str], call: tuple[str, str], ref: str
    ) -> None:
        self.assert_refused(read(client, ref, tokens["supervisor"]))

    def test_a_call_in_a_queue_the_role_does_not_serve(
        self, client: FlaskClient, runtime: Runtime, tokens: dict[str, str], call: tuple[str, str]
    ) -> None:
        _, ref = call  # card-services: the default flow has specialists and supervisors serve it
        self.assert_refused(read(client, ref, tokens["agent"]))
        assert read(client, ref, tokens["specialist"]).status_code == 200

    def test_a_role_the_policy_does_not_name(
        self, client: FlaskClient, runtime: Runtime, tokens: dict[str, str], call: tuple[str, str]
    ) -> None:
        token = runtime.agents.add("ivan", "intern")
        self.assert_refused(read(client, call[1], token))

    def test_every_refusal_is_byte_identical(
        self, client: FlaskClient, runtime: Runtime, tokens: dict[str, str], call: tuple[str, str]
    ) -> None:
        _, ref = call
        answers = [
            read(client, ref, "A" * 43),
            read(client, "nosuchcallatall0", tokens["agent"]),
            read(client, ref, tokens["agent"]),  # another queue's call
        ]
        shapes = {(r.status_code, r.data, tuple(sorted(r.headers.items()))) for r in answers}
        assert len(shapes) == 1


def _token(app: Flask) -> str:
    return app.config["IVR_SETTINGS"].twilio_auth_token


class TestAudit:
    def test_every_read_is_audited_without_a_field_value(
        self,
        client: FlaskClient,
        runtime: Runtime,
        customers: Any,
        tokens: dict[str, str],
        player: PlayerFactory,
    ) -> None:
        caller, _ = enqueued_call(player, client)
        ref = ref_of(runtime, caller.call_sid)
        read(client, ref, tokens["specialist"])
        read(client, ref, tokens["agent"])
        read(client, ref, "A" * 43)
        read(client, "nosuchcallatall0", tokens["supervisor"])
        events = [e for e in audit_events(runtime.redis) if e["event"] == "agent_read"]
        shown = [{k: v for k, v in e.items() if k != "at"} for e in events]
        assert shown == [
            {
                "event": "agent_read",
                "call_sid": caller.call_sid,
                "account": ALICE.account,
                "agent": "sam",
                "role": "specialist",
                "outcome": "allowed",
                "detail": "assurance=two_factor fields=first_name,account_status,name,account,"
                "address",
            },
            {
                "event": "agent_read",
                "call_sid": caller.call_sid,
                "agent": "ann",
                "role": "agent",
                "outcome": "refused",
                "detail": "queue",
            },
            {"event": "agent_read", "outcome": "refused", "detail": "token"},
            {
                "event": "agent_read",
                "agent": "sue",
                "role": "supervisor",
                "outcome": "refused",
                "detail": "unknown_ref",
            },
        ]
        values = " ".join(v for e in events for v in e.values())
        for secret in (ALICE.name, "Alice", ALICE.address, ALICE.email, ALICE.phone, ref):
            assert secret not in values

    def test_a_read_before_authentication_names_no_account(
        self,
        client: FlaskClient,
        runtime: Runtime,
        customers: Any,
        tokens: dict[str, str],
        player: PlayerFactory,
    ) -> None:
        caller = player(send_status=False, pause_scale=0)
        script = Script(
            ("identify", Keys(ALICE.account + "#")),
            ("choose_method", None),
            ("choose_method", None),
            ("choose_method", None),
        ).at("choose_method", lambda: reads(client, runtime, caller.call_sid, tokens))
        caller.play(script)
        events = [e for e in audit_events(runtime.redis) if e["event"] == "agent_read"]
        assert len(events) == 3
        assert all("account" not in e and e["outcome"] == "allowed" for e in events)
        assert {e["detail"] for e in events} == {"assurance=none fields=-"}


class TestWithoutPolicyOrRedis:
    def test_no_policy_file_refuses_every_read(self, redis: Any) -> None:
        app = make_app(redis, flows_dir=FLOWS_DIR.parent / "tests" / "flows", flow="reidentify")
        with app.app_context():
            token = app.extensions["ivr"].agents.add("ann", "agent")
        response = read(app.test_client(), "nosuchcallatall0", token)
        assert response.status_code == 404
        assert audit_events(redis)[-1]["detail"] == "no_policy"

    def test_redis_down_is_a_503_in_json(self) -> None:
        dead = Redis(
            port=find_free_port(),
            socket_connect_timeout=0.2,
            socket_timeout=0.2,
            retry=Retry(NoBackoff(), 0),
        )
        response = read(make_app(dead).test_client(), "nosuchcallatall0", "A" * 43)
        dead.close()
        assert response.status_code == 503
        assert "unavailable" in response.get_json()["error"]
