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
from ivr.flows.schema import Flow
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
    app.extensions[EXTENSION] = build_runtime(settings, redis, load_checked_flow(settings))
    trust_proxies(app, settings.proxy_hops)

    from ivr.web import voice

    app.register_blueprint(voice.bp)
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
