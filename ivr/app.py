"""The application factory: settings, Redis, the flow and the blueprints; nothing else."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask
from redis import Redis

from ivr.errors import FlowDefinitionError, Problem, SettingsError
from ivr.flows.checks import check_flow, errors
from ivr.flows.loader import load_flow_with_marks
from ivr.flows.schema import AuthenticateStep, Flow
from ivr.runtime import EXTENSION, build_runtime, connect_redis
from ivr.security import trust_proxies
from ivr.settings import Settings, load_settings


def create_app(
    config: Settings | Mapping[str, Any] | None = None, *, redis: Redis | None = None
) -> Flask:
    """Build the web app; `config` overrides settings by field name (tests pass a dict)."""
    settings = config if isinstance(config, Settings) else load_settings(**dict(config or {}))
    if redis is None:
        if not settings.redis_url:
            raise SettingsError("REDIS_URL: not set; point it at Redis, or run `ivr dev`")
        redis = connect_redis(settings.redis_url)
    app = Flask(__name__)
    app.config["IVR_SETTINGS"] = settings
    flow = load_checked_flow(settings)
    check_delivery_settings(flow, settings)
    app.extensions[EXTENSION] = build_runtime(settings, redis, flow)
    trust_proxies(app, settings.proxy_hops)

    from ivr.web import api, voice

    app.register_blueprint(voice.bp)
    app.register_blueprint(api.bp)
    logging.getLogger("ivr").setLevel(logging.INFO)
    return app


def load_checked_flow(settings: Settings) -> Flow:
    """The flow to serve; one that fails its checks is never served."""
    path = settings.flows_dir / f"{settings.flow}.yaml"
    if not path.is_file():
        raise FlowDefinitionError(
            [
                Problem(
                    str(path),
                    None,
                    None,
                    "",
                    "flow file not found",
                    "set IVR_FLOWS_DIR and IVR_FLOW to an existing flows/<name>.yaml",
                )
            ]
        )
    flow, marks = load_flow_with_marks(path)
    found = errors(check_flow(flow, marks, str(path)))
    if found:
        raise FlowDefinitionError(found)
    return flow


def check_delivery_settings(flow: Flow, settings: Settings) -> None:
    """Refuse to start a flow whose methods the settings cannot deliver, naming the variable."""
    methods = {s.method for s in flow.steps.values() if isinstance(s, AuthenticateStep)}
    needs_key = "service_code" in methods or any(
        (m == "sms_otp" and settings.sms_backend != "verify")
        or (m == "email_otp" and settings.email_backend != "verify")
        for m in methods
    )
    if needs_key and not settings.code_key:
        raise SettingsError(
            f"IVR_CODE_KEY: not set, but flow `{flow.name}` offers one-time or service codes; "
            "set it to a long random secret (16+ characters)"
        )
    if "callback" in methods and settings.call_backend == "twilio":
        if not settings.public_url:
            raise SettingsError(
                "IVR_PUBLIC_URL: not set, but callbacks through Twilio need the URL Twilio calls"
            )
        if not settings.caller_id:
            raise SettingsError("IVR_CALLER_ID: not set, but callbacks need a number to call from")
    uses_verify = {settings.sms_backend, settings.email_backend} & {"verify"}
    if uses_verify and not settings.verify_service_sid:
        raise SettingsError("TWILIO_VERIFY_SERVICE_SID: required by the `verify` backend")
