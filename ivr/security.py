"""Only Twilio may drive a call: every webhook must carry a valid X-Twilio-Signature.

Checked with twilio's own RequestValidator against the URL Twilio used, which behind a
TLS-terminating proxy is the public https URL, not the one this process sees. A signature is only
worth the URL it is checked against, so the host that URL is built from must be one of ours
(`served_hosts`), and forwarded headers count only for the configured number of proxies.

Twilio signs the URL and the urlencoded POST parameters, nothing else: a webhook's parameters are
read from that body alone, once (`signed_params`), after the body was bounded and refused if it
is anything else.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from urllib.parse import parse_qsl, quote, urlparse, urlsplit

from flask import Flask, Request, abort, request
from twilio.request_validator import RequestValidator, add_port, compare, remove_port
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import Forbidden, SecurityError
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import LimitedStream

from ivr.settings import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
WEBHOOK_MIMETYPE = "application/x-www-form-urlencoded"
#: Bytes of any request body, checked before a byte is read (chunked bodies included). A Twilio
#: webhook is about 2 KB (a long SpeechResult adds a few KB); the service-code API's JSON is
#: a few dozen bytes.
MAX_BODY_BYTES = 64 * 1024
#: Served when neither IVR_ALLOWED_HOSTS nor IVR_PUBLIC_URL names the service: a development
#: machine. No signature made for a public webhook URL validates against a loopback URL.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")
_FORWARDED = ("Forwarded", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port")
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def served_hosts(settings: Settings) -> list[str]:
    """Host names requests may be addressed to: IVR_ALLOWED_HOSTS (else the loopback names),
    plus the host of IVR_PUBLIC_URL. Never empty: Flask reads an empty list as "any host"."""
    hosts = list(settings.allowed_hosts or LOOPBACK_HOSTS)
    if settings.public_url:
        hosts.append(urlsplit(settings.public_url).hostname or "")
    return [host for host in hosts if host]


def guard_requests(app: Flask, settings: Settings) -> None:
    """Bound every request of `app` before it is read and refuse foreign hosts, on every route."""
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,  # the only bound that counts: see `signed_params`
        TRUSTED_HOSTS=served_hosts(settings),
    )
    trust_proxies(app, settings.proxy_hops)
    app.register_error_handler(SecurityError, _foreign_host)


def _foreign_host(error: SecurityError) -> Forbidden:
    """Werkzeug refused the Host (after ProxyFix): a signature made for another deployment of
    the same Twilio account must not be checked against a URL built from it."""
    log.warning(
        "refused a request for host %r: not in IVR_ALLOWED_HOSTS (or the host of "
        "IVR_PUBLIC_URL); add it there if this service really is reached by that name",
        request.headers.get("Host", "")[:100],  # as ProxyFix left it
    )
    return Forbidden()


def public_url(request: Request, public_base: str | None) -> str:
    """The URL Twilio requested, as it signed it: percent-encoding kept, not decoded."""
    base = public_base or f"{request.scheme}://{request.host}"
    path = quote(request.script_root + request.path, safe=_PATH_SAFE)
    query = request.query_string.decode("latin-1")
    return base + path + (f"?{query}" if query else "")


def signed_params(request: Request, settings: Settings) -> dict[str, str]:
    """The parameters of a webhook, exactly those Twilio signed; aborts before any handler runs,
    so a refused request changes nothing.

    403: no auth token, or a missing or wrong signature. 415: a body that is not urlencoded
    (a multipart body is not covered by the signature). 413: a body over MAX_BODY_BYTES.
    400: a signed request that gives a parameter twice (Twilio never does; which copy a reader
    takes is a guess).
    """
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not settings.twilio_auth_token or not signature:
        abort(403)  # RequestValidator raises on None; an empty one can never be right
    if request.mimetype != WEBHOOK_MIMETYPE:
        abort(415)
    form = _form(request)  # only now is the body read, and at most MAX_BODY_BYTES of it
    stream = request.stream
    if request.content_length is None and isinstance(stream, LimitedStream) and stream.is_exhausted:
        abort(413)  # chunked, and it reached the bound: werkzeug stops reading there, silently
    url = public_url(request, settings.public_url)
    # Every value of a repeated parameter counts in the signature (RequestValidator reads the
    # MultiDict whole), so a forged request is a 403 whatever it repeats.
    if not _valid(_validator(settings.twilio_auth_token), url, form, signature):
        log.warning(
            "X-Twilio-Signature did not match; checked against %s (%s)",
            url if url.isprintable() else ascii(url),
            _likely_cause(request, settings),
        )
        abort(403)
    repeated = sorted(name[:40] for name, values in form.lists() if len(values) > 1)
    if repeated:
        log.warning("refused a webhook that repeats parameter(s) %s", repeated[:5])
        abort(400)
    return form.to_dict()


def _form(request: Request) -> MultiDict[str, str]:
    """The urlencoded body as werkzeug's form parser reads it (the same `parse_qsl` call, the
    same handler for bytes that are not UTF-8), without building a parser per request."""
    body = request.get_data(cache=True).decode(errors="werkzeug.url_quote")
    return MultiDict(parse_qsl(body, keep_blank_values=True, errors="werkzeug.url_quote"))


@lru_cache(maxsize=4)
def _validator(token: str) -> RequestValidator:
    """One per auth token and process: it holds nothing but the token."""
    return RequestValidator(token)


def _valid(
    validator: RequestValidator, url: str, form: MultiDict[str, str], signature: str
) -> bool:
    """`validator.validate(url, form, signature)`, which computes the signature of the URL
    both with and without its port: the URL as it stands is one of the two, so it is tried
    alone first, and only a mismatch pays for `validate` itself. Accepts exactly what
    `validate` accepts."""
    parsed = urlparse(url)
    # The one of validate's two URLs that leaves a URL of that form unchanged.
    checked = add_port(parsed) if parsed.port else remove_port(parsed)
    if checked == url and compare(validator.compute_signature(url, form), signature):
        return True
    return bool(validator.validate(url, form, signature))


def _likely_cause(request: Request, settings: Settings) -> str:
    """Why a signature most often fails: the URL rebuilt here is not the one Twilio called."""
    if settings.public_url:
        return (
            f"IVR_PUBLIC_URL is {settings.public_url}: the webhook URL on the Twilio number "
            "must start with exactly that scheme, host and port; else the token differs"
        )
    forwarded = [name for name in _FORWARDED if name in request.headers]
    if forwarded and not settings.proxy_hops:
        return (
            f"the request came through a proxy ({', '.join(forwarded)}) but IVR_PROXY_HOPS is "
            "0, so they were ignored: set IVR_PROXY_HOPS to the number of proxies, or "
            "IVR_PUBLIC_URL"
        )
    how = (
        f"rebuilt from the X-Forwarded-* headers of {settings.proxy_hops} proxy hop(s)"
        if settings.proxy_hops
        else "as this process saw it"
    )
    hint = (
        "Twilio calls https URLs: behind a TLS-terminating proxy set IVR_PROXY_HOPS or "
        "IVR_PUBLIC_URL; "
        if request.scheme == "http"
        else ""
    )
    return (
        f"scheme, host and port {how}; {hint}otherwise the request was signed with another "
        "auth token than TWILIO_AUTH_TOKEN, or forged"
    )


def trust_proxies(app: Flask, hops: int) -> None:
    """Believe X-Forwarded-* only from the configured number of proxies in front of us."""
    if hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )
