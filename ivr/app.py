"""The application factory: settings, Redis, the flow and the blueprints; nothing else."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from redis import Redis

from ivr.auth.agent_policy import AGENT_POLICY_FILE, AgentPolicy, load_agent_policy
from ivr.errors import FlowDefinitionError, Problem, SettingsError
from ivr.flows.checks import check_flow, errors
from ivr.flows.loader import load_flow_with_marks
from ivr.flows.schema import AuthenticateStep, Flow
from ivr.runtime import EXTENSION, build_runtime, connect_redis
from ivr.security import guard_requests
from ivr.settings import ENV_NAMES, Settings, load_settings


def create_app(
    config: Settings | Mapping[str, Any] | None = None, *, redis: Redis | None = None
) -> Flask:
    """Build the web app; `config` overrides settings by field name (tests pass a dict)."""
    settings = config if isinstance(config, Settings) else load_settings(**dict(config or {}))
    if redis is None:
        if not settings.redis_url:
            raise SettingsError("REDIS_URL: not set; point it at Redis, or run `ivr dev`")
        redis = connect_redis(settings.redis_url, settings)
    app = Flask(__name__)
    app.config["IVR_SETTINGS"] = settings
    flow = load_checked_flow(settings)
    check_delivery_settings(flow, settings)
    policy = agent_policy_for(settings)
    app.extensions[EXTENSION] = build_runtime(
        settings, redis, flow, policy, lambda version: servable(version, settings)
    )
    guard_requests(app, settings)

    from ivr.web import agent_page, agents, api, voice

    app.register_blueprint(voice.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(agents.bp)
    app.register_blueprint(agent_page.bp)
    if settings.dev_phone:  # the browser phone: `ivr dev` only
        from ivr.web import dev_phone

        app.register_blueprint(dev_phone.bp)
    logging.getLogger("ivr").setLevel(logging.INFO)
    # Operations (issue 9): probes and metrics in front of the host check, request timing, logs.
    from ivr import logging_setup, metrics
    from ivr.web import health

    health.install(app)
    metrics.time_requests(app)
    logging_setup.configure(settings.log_format)
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


def servable(flow: Flow, settings: Settings) -> None:
    """Raise unless this service may serve `flow`, a published version: the checks `ivr flows
    publish` ran (a version in Redis may not have come through it), and delivery settings."""
    found = errors(check_flow(flow, None, f"<flow {flow.name}>"))
    if found:
        raise FlowDefinitionError(found)
    check_delivery_settings(flow, settings)


def agent_policy_path(settings: Settings) -> Path:
    return settings.agent_policy or settings.flows_dir / AGENT_POLICY_FILE


def agent_policy_for(settings: Settings) -> AgentPolicy | None:
    """The agent policy, checked; None when there is none at the default place (the agent API
    then refuses every read). IVR_AGENT_POLICY naming a missing file stops the service."""
    path = agent_policy_path(settings)
    if settings.agent_policy is None and not path.exists():
        return None
    if not path.is_file():
        raise SettingsError(f"IVR_AGENT_POLICY: {path} is not a file")
    return load_agent_policy(path)


# What each delivery backend needs, by the field of Settings that holds it.
_BACKEND_NEEDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("sms_otp", "twilio"): ("twilio_account_sid", "sms_from", "code_key"),
    ("sms_otp", "verify"): ("twilio_account_sid", "verify_service_sid"),
    ("sms_otp", "outbox"): ("code_key",),
    ("email_otp", "smtp"): ("smtp_url", "email_from", "code_key"),
    ("email_otp", "verify"): ("twilio_account_sid", "verify_service_sid"),
    ("email_otp", "outbox"): ("code_key",),
    ("callback", "twilio"): ("twilio_account_sid", "caller_id", "public_url"),
    ("callback", "outbox"): (),
    ("service_code", ""): ("code_key",),
}


def check_delivery_settings(flow: Flow, settings: Settings) -> None:
    """Refuse to start a flow whose methods the settings cannot deliver, naming the variable,
    rather than let a caller hold for a code that can never be sent."""
    backends = {
        "sms_otp": settings.sms_backend,
        "email_otp": settings.email_backend,
        "callback": settings.call_backend,
    }
    methods = sorted({s.method for s in flow.steps.values() if isinstance(s, AuthenticateStep)})
    problems = []
    for method in methods:
        backend = backends.get(method, "")
        for field in _BACKEND_NEEDS.get((method, backend), ()):
            if not getattr(settings, field):
                how = f" through `{backend}`" if backend else ""
                problems.append(
                    f"{ENV_NAMES[field]}: not set, but flow `{flow.name}` offers `{method}`{how}"
                )
    if problems:
        raise SettingsError(*dict.fromkeys(problems))
