"""`/healthz`, `/readyz` and `/metrics`: what a load balancer, an orchestrator and Prometheus ask.

They answer on any Host header, in front of the app's host check (`ivr.security.guard_requests`):
a load balancer's health check or a scraper addresses a target by its internal name or IP,
which no IVR_ALLOWED_HOSTS could list. That is safe because the host check exists for signed
webhooks, whose signature is checked against a URL built from the Host; these three build no
URL, read no body, take no parameter, and say only a word, or (with the token) the figures.

- `/healthz`: 200 "ok" while the process answers at all; never touches Redis, so a Redis outage
  does not get every web process restarted.
- `/readyz`: 200 "ok", else 503 with one word for the first thing missing: "redis" (no answer),
  "flow" (no flow to start a call on), "worker" (no worker heartbeat lately, so no code can be
  sent); take the process out of rotation, do not restart it.
- `/metrics`: Prometheus text, only with `Authorization: Bearer <IVR_METRICS_TOKEN>`; while that
  is unset it is not served at all (404, as any unknown path), so the default reveals nothing.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from redis.exceptions import RedisError
from werkzeug.wrappers import Request, Response

from ivr import metrics
from ivr.runtime import EXTENSION, Runtime

log = logging.getLogger(__name__)

PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_PLAIN = "text/plain; charset=utf-8"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def install(app: Flask) -> None:
    """Answer the three paths in front of everything else `app` does (after ProxyFix, if any:
    it changes no path)."""
    rt: Runtime = app.extensions[EXTENSION]
    app.wsgi_app = OpsEndpoints(app.wsgi_app, rt)  # type: ignore[method-assign]


def not_ready(rt: Runtime) -> str | None:
    """Why this process should not take calls, in one word; None when it should."""
    try:
        rt.redis.ping()
    except RedisError:
        return "redis"
    try:
        rt.current()
    except Exception as exc:  # a version it cannot serve, or Redis gone in between
        log.warning("not ready: no flow to start a call on (%s)", type(exc).__name__)
        return "flow"
    try:
        alive = metrics.live_workers(rt.redis)
    except RedisError:
        return "redis"
    return None if alive else "worker"


class OpsEndpoints:
    def __init__(self, app: WSGIApp, rt: Runtime) -> None:
        self.app, self.rt = app, rt

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path not in PATHS:
            return self.app(environ, start_response)
        return self._answer(Request(environ), path)(environ, start_response)

    def _answer(self, request: Request, path: str) -> Response:
        token = self.rt.settings.metrics_token
        if path == "/metrics" and not token:
            return _plain(404, "not found")
        if request.method not in ("GET", "HEAD"):
            return _plain(405, "method not allowed", Allow="GET, HEAD")
        if path == "/healthz":
            return _plain(200, "ok")
        if path == "/readyz":
            reason = not_ready(self.rt)
            return _plain(200, "ok") if reason is None else _plain(503, reason)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _plain(401, "unauthorized", **{"WWW-Authenticate": "Bearer"})
        try:
            body, content_type = metrics.exposition(self.rt.redis)
        except RedisError:
            return _plain(503, "redis")
        return Response(body, 200, content_type=content_type, headers=_NO_STORE)


_NO_STORE = {"Cache-Control": "no-store"}


def _plain(status: int, word: str, **headers: str) -> Response:
    return Response(word, status, content_type=_PLAIN, headers={**_NO_STORE, **headers})
