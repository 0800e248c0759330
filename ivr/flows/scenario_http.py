"""`ivr flows test --url`: the scenarios played against a running service over HTTP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ivr.errors import IvrError
from ivr.flows.scenario_call import CALLBACK_NUMBER, ScenarioCall, ScenarioFailed
from ivr.outbox import Outbox, OutboxMessage
from ivr.simulator import CallPlayer, HttpTransport
from ivr.simulator.phone import answering, newest_code


class OverHttp:
    """A running service (`ivr dev`, or a dev or staging one with its Auth Token): real HTTP,
    real pauses, the real worker. Its Redis must be reachable: the file's customers are enrolled
    there, and before each scenario what earlier ones left for those customers and the calling
    numbers is forgotten (`forget_test_identities`), as in process each scenario starts afresh."""

    def __init__(self, url: str, settings: Any, state: Any, customers: list[Any]) -> None:
        self.url = url.rstrip("/")
        self.token = settings.twilio_auth_token or (state.auth_token if state else None)
        if not self.token:
            raise IvrError("TWILIO_AUTH_TOKEN: not set; requests must be signed like Twilio's")
        self.api_token = settings.api_token or (state.api_token if state else None)
        self.outbox = Outbox(Path(state.outbox) if state else settings.outbox)
        self.settings, self.seen, self.customers = settings, 0, customers
        self.redis = _service_redis(settings.redis_url or (state.redis_url if state else None))
        self.sids: set[str] = set()
        self.audit_cursor = "0-0"
        if customers:
            from ivr.dev.customers import customer_record
            from ivr.runtime import make_hasher
            from ivr.store.customers import RedisCustomerDirectory

            directory = RedisCustomerDirectory(self.redis)
            for who in customers:
                if directory.get(who.account) is None:
                    directory.add(customer_record(who, make_hasher(settings)))

    def start(self, call: ScenarioCall) -> None:
        from ivr.store import keys
        from ivr.store.test_identities import forget_test_identities

        numbers = {call.scenario.caller, CALLBACK_NUMBER, *(who.phone for who in self.customers)}
        forget_test_identities(self.redis, [who.account for who in self.customers], numbers)
        self.seen = len(self.outbox.messages())
        self.sids = set()
        newest = self.redis.xrevrange(keys.AUDIT, count=1)
        self.audit_cursor = newest[0][0].decode() if newest else "0-0"

    def authenticated(self) -> bool:
        """Whether the service has audited a proof of this scenario's calls since last asked:
        the `authenticate` event with outcome `success`, as the engine trace is not seen."""
        from ivr.store import keys

        fresh = self.redis.xrange(keys.AUDIT, min=f"({self.audit_cursor}", max="+")
        if fresh:
            self.audit_cursor = fresh[-1][0].decode()
        return any(
            values.get(b"event") == b"authenticate"
            and values.get(b"outcome") == b"success"
            and values.get(b"call_sid", b"").decode() in self.sids
            for _, values in fresh
        )

    def player(self, call: ScenarioCall, caller: str, ring: OutboxMessage | None) -> CallPlayer:
        extra = {"StirVerstat": call.scenario.stir_verstat} if call.scenario.stir_verstat else {}
        options: dict[str, Any] = {"from_number": caller, "observer": call.observe}
        if ring is not None:
            options |= answering(ring)
        else:
            options["extra_params"] = extra
        player = CallPlayer(HttpTransport(), self.url, self.token, **options)
        self.sids.add(player.call_sid)
        return player

    def hold(self) -> None:
        """The player really pauses; the service's worker delivers meanwhile."""

    def call_back(self) -> OutboxMessage | None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            calls = [m for m in self.outbox.messages()[self.seen :] if m.channel == "call"]
            if calls:
                return calls[-1]
            time.sleep(0.2)
        return None

    def latest_code(self, channel: str) -> str | None:
        return newest_code(Outbox(self.outbox.path).messages(), (channel,))

    def service_code(self, account: str) -> str:
        import requests

        if not self.api_token:
            raise ScenarioFailed("IVR_API_TOKEN: not set; a service code is issued by the API")
        response = requests.post(
            f"{self.url}/api/service-codes",
            json={"account": account},
            headers={"Authorization": f"Bearer {self.api_token}"},
            timeout=10,
        )
        if response.status_code != 201:
            raise ScenarioFailed(f"POST /api/service-codes answered {response.status_code}")
        return str(response.json()["code"])


def _service_redis(url: str | None) -> Any:
    """The service's Redis, or a refusal: without it scenarios cannot be isolated from one
    another, and a run whose scenarios meet each other's lockouts would lie."""
    import redis

    from ivr.runtime import connect_redis

    if not url:
        raise IvrError("--url needs the service's Redis (REDIS_URL) to isolate scenarios; not set")
    client = connect_redis(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise IvrError(
            "--url needs the service's Redis to isolate scenarios; REDIS_URL is not "
            f"reachable from here ({type(exc).__name__})"
        ) from None
    return client
