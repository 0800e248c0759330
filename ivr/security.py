"""Only Twilio may drive a call: every webhook must carry a valid X-Twilio-Signature.

Checked with twilio's own RequestValidator against the URL Twilio used, which behind a
TLS-terminating proxy is the public https URL, not the one this process sees.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Flask, Request, abort
from twilio.request_validator import RequestValidator
from werkzeug.middleware.proxy_fix import ProxyFix

SIGNATURE_HEADER = "X-Twilio-Signature"
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def public_url(request: Request, public_base: str | None) -> str:
    """The URL Twilio requested, as it signed it: percent-encoding kept, not decoded."""
    base = public_base or f"{request.scheme}://{request.host}"
    path = quote(request.script_root + request.path, safe=_PATH_SAFE)
    query = request.query_string.decode("latin-1")
    return base + path + (f"?{query}" if query else "")


def is_signed_by_twilio(request: Request, auth_token: str | None, public_base: str | None) -> bool:
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not auth_token or not signature:
        return False  # RequestValidator raises on None; an empty one can never be right
    params = request.form if request.mimetype == "application/x-www-form-urlencoded" else {}
    return RequestValidator(auth_token).validate(
        public_url(request, public_base), params, signature
    )


def require_twilio_signature(
    request: Request, auth_token: str | None, public_base: str | None
) -> None:
    """Abort with 403 before any handler runs, so a forged request changes nothing."""
    if not is_signed_by_twilio(request, auth_token, public_base):
        abort(403)


def trust_proxies(app: Flask, hops: int) -> None:
    """Believe X-Forwarded-* only from the configured number of proxies in front of us."""
    if hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )
