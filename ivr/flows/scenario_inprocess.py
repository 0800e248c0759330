"""Where scenarios play by default: a fresh service per scenario, the app on its own fakeredis,
the worker's jobs run in process whenever the caller is put on hold, so a code lands in the
outbox as it would."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from ivr.flows.scenario_call import ScenarioCall, ScenarioFailed
from ivr.outbox import Outbox, OutboxMessage
from ivr.simulator import CallPlayer
from ivr.simulator.phone import answering, newest_code

WORKFLOW_SID = "WW" + "0" * 32  # in process: enqueue as a task, so its attributes are seen


class InProcess:
    """A fresh service per scenario: the app on its own fakeredis, the worker in process."""

    def __init__(self, flows_dir: Path, flow: str, customers: list[Any], work: Path) -> None:
        self.flows_dir, self.flow_name, self.customers = flows_dir, flow, customers
        self.work = work
        self.token = secrets.token_hex(16)
        self.api_token = secrets.token_hex(16)
        self.code_key = secrets.token_hex(16)
        self.app: Any = None
        self.outbox: Outbox | None = None

    def worker_env(self) -> dict[str, str]:
        """What the jobs read their settings from (they load them from the environment)."""
        return {
            "IVR_CODE_KEY": self.code_key,
            "IVR_OUTBOX": str(self.work / "outbox.jsonl"),
            "IVR_SMS_BACKEND": "outbox",
            "IVR_EMAIL_BACKEND": "outbox",
            "IVR_CALL_BACKEND": "outbox",
            "IVR_LOOKUP": "off",
        }

    def start(self, call: ScenarioCall) -> None:
        import fakeredis

        from ivr.app import create_app
        from ivr.dev.customers import customer_record
        from ivr.settings import load_settings

        outbox = self.work / f"outbox-{call.index}.jsonl"
        outbox.unlink(missing_ok=True)
        self.outbox = Outbox(outbox)
        os.environ["IVR_OUTBOX"] = str(outbox)
        settings = load_settings(
            twilio_auth_token=self.token,
            api_token=self.api_token,
            code_key=self.code_key,
            pepper=secrets.token_hex(16),
            # Secrets here are test data: cheap hashing keeps a scenario to milliseconds.
            argon2_memory_kib=1024,
            argon2_time_cost=1,
            flows_dir=self.flows_dir,
            flow=self.flow_name,
            outbox=outbox,
            sms_backend="outbox",
            email_backend="outbox",
            call_backend="outbox",
            lookup="off",
            taskrouter_workflow_sid=WORKFLOW_SID,
        )
        self.redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        self.app = create_app(settings, redis=self.redis)
        rt = self.app.extensions["ivr"]
        for who in self.customers:
            rt.customers.add(customer_record(who, rt.hasher))
        rt.engine.trace = call.record

    def player(self, call: ScenarioCall, caller: str, ring: OutboxMessage | None) -> CallPlayer:
        from ivr.simulator import WsgiTransport

        extra = {"StirVerstat": call.scenario.stir_verstat} if call.scenario.stir_verstat else {}
        if ring is not None:
            return CallPlayer(
                WsgiTransport(self.app),
                "http://localhost",
                self.token,
                from_number=caller,
                observer=call.observe,
                pause_scale=0,
                **answering(ring),
            )
        return CallPlayer(
            WsgiTransport(self.app),
            "http://localhost",
            self.token,
            from_number=caller,
            extra_params=extra,
            observer=call.observe,
            pause_scale=0,
        )

    def authenticated(self) -> bool:
        """In process the engine trace tells when the caller was authenticated."""
        return False

    def hold(self) -> None:
        _run_jobs(self.redis)

    def call_back(self) -> OutboxMessage | None:
        _run_jobs(self.redis)
        assert self.outbox is not None
        calls = [m for m in self.outbox.messages() if m.channel == "call"]
        return calls[-1] if calls else None

    def latest_code(self, channel: str) -> str | None:
        assert self.outbox is not None
        return newest_code(self.outbox.messages(), (channel,))

    def service_code(self, account: str) -> str:
        response = self.app.test_client().post(
            "/api/service-codes",
            json={"account": account},
            headers={"Authorization": f"Bearer {self.api_token}"},
        )
        if response.status_code != 201:
            raise ScenarioFailed(f"POST /api/service-codes: {response.get_json()}")
        return str(response.get_json()["code"])


def _run_jobs(redis: Any) -> None:
    """Every job queued now, in this process, as `rq worker --burst` would; rq's signal
    handlers are put back afterwards."""
    import signal

    from rq import Queue, SimpleWorker

    from ivr.processes import QUEUE

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        SimpleWorker([Queue(QUEUE, connection=redis)], connection=redis).work(
            burst=True, logging_level="WARNING"
        )
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
