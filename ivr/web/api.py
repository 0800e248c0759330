"""Server-to-server API: the customer's web backend asks for a service code.

A customer signed in to the website presses "service code"; the web backend, holding
IVR_API_TOKEN, asks us for one and shows it. Keying it into the IVR then proves possession of
the signed-in web account. The code is returned once and stored only as a keyed digest.
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ivr.runtime import runtime
from ivr.store.customers import ACCOUNT

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api")


def _error(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


@bp.errorhandler(Exception)
def _unavailable(error: Exception) -> Response:
    """The web backend gets JSON it can act on (413 for a body over the limit, a 503 it can
    retry), never an HTML page and never a 500."""
    if isinstance(error, HTTPException):
        return _error(error.code or 400, error.description or error.name)
    log.error("service-code API failed (%s)", type(error).__name__, exc_info=error)
    return _error(503, "service codes are unavailable right now; try again shortly")


@bp.before_request
def _authenticated() -> Response | None:
    token = runtime().settings.api_token
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {token}" if token else None
    if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
        return _error(401, "a valid `Authorization: Bearer <IVR_API_TOKEN>` header is required")
    return None


@bp.post("/service-codes")
def issue_service_code() -> Response:
    rt = runtime()
    body = request.get_json(silent=True)
    account = body.get("account") if isinstance(body, dict) else None
    if not isinstance(account, str) or not ACCOUNT.fullmatch(account):
        return _error(400, 'send JSON like {"account": "12345678"} (6 to 12 digits)')
    if rt.customers.get(account) is None:
        return _error(404, f"no customer with account number {account}")
    if rt.settings.code_key is None:
        return _error(503, "service codes are off: IVR_CODE_KEY is not set")
    code = rt.possession.issue_service_code(account)
    response = jsonify(
        {"account": account, "code": code, "expires_in": rt.settings.service_code_ttl}
    )
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response
