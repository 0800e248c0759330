"""The agent screen pop: one page an agent (or a Flex / CRM panel embedding it) keeps open.

The page itself holds nothing about any call: it is the same static HTML for everyone, and its
script asks the agent API (`GET /api/calls/<ref>`) with the agent's own token, so what a role may
see is decided in one place, the API. The headers keep the page from becoming the weak spot:
scripts only from this origin (customer data is rendered as text, and even an injected tag could
not run), no caching, and framing only by this origin or the CRM origins in
IVR_AGENT_FRAME_ANCESTORS.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request

from ivr.runtime import runtime

bp = Blueprint(
    "agent_page",
    __name__,
    url_prefix="/agent",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

#: How often the page asks the API again, in milliseconds: a call on hold changes within seconds.
POLL_MS = 2000


def content_security_policy(frame_ancestors: tuple[str, ...]) -> str:
    """Everything from this origin only, nothing inline, framed by ourselves or the CRMs named."""
    ancestors = " ".join(("'self'", *frame_ancestors))
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; "
        f"frame-ancestors {ancestors}"
    )


@bp.get("")
def page() -> str:
    return render_template("agent.html", poll_ms=POLL_MS, api=f"{request.script_root}/api/calls/")


@bp.after_request
def _headers(response: Response) -> Response:
    ancestors = runtime().settings.agent_frame_ancestors
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(ancestors)
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    if not ancestors:
        # For browsers that predate frame-ancestors; it cannot name another origin, so with
        # CRM origins configured the CSP alone decides.
        headers["X-Frame-Options"] = "SAMEORIGIN"
    return response
