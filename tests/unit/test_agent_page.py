"""The agent page as a browser receives it: one static page, locked down by its headers.

What it shows for a call is decided by the agent API and checked in a real browser
(tests/integration/test_screen_pop.py); here: the page holds nothing of its own, runs no inline
code, is never cached, is framed only where allowed, and its script never parses data as HTML.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from flask.testing import FlaskClient

from ivr.errors import SettingsError
from ivr.settings import load_settings
from tests.conftest import make_app


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_text.append(data)


def _policy(header: str) -> dict[str, list[str]]:
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


def test_the_page_is_served_with_a_strict_policy(client: FlaskClient) -> None:
    response = client.get("/agent")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    policy = _policy(response.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'self'"]
    assert policy["form-action"] == ["'none'"]  # a token typed into the form never goes to a URL
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_the_page_runs_no_inline_code(client: FlaskClient) -> None:
    parser = _Tags()
    parser.feed(client.get("/agent").get_data(as_text=True))
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts and all(attrs.get("src", "").startswith("/agent/static/") for attrs in scripts)
    assert parser.script_text == []
    inline = [
        (tag, name)
        for tag, attrs in parser.tags
        for name in attrs
        if name.startswith("on") or name == "style"
    ]
    assert inline == []
    assert ("style", {}) not in parser.tags


def test_the_script_and_style_are_served_from_the_package(client: FlaskClient) -> None:
    with client.get("/agent/static/agent.js") as script:
        assert script.status_code == 200
        assert script.mimetype in ("text/javascript", "application/javascript")
        assert script.headers["X-Content-Type-Options"] == "nosniff"
    with client.get("/agent/static/agent.css") as style:
        assert style.status_code == 200 and style.mimetype == "text/css"


def test_the_script_sets_customer_data_only_as_text(client: FlaskClient) -> None:
    """Field values are customer data: an HTML sink would turn a name into markup."""
    with client.get("/agent/static/agent.js") as response:
        source = response.get_data(as_text=True)
    sinks = re.findall(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"createContextualFragment|setHTML|DOMParser",
        source,
    )
    assert sinks == []
    assert "textContent" in source


def test_the_page_says_nothing_about_any_call(client: FlaskClient) -> None:
    """Everyone gets the same bytes; only the API, asked with a token, says anything."""
    first = client.get("/agent#ref=abc").get_data()
    assert client.get("/agent", headers={"Authorization": "Bearer x" * 3}).get_data() == first


def test_a_crm_origin_may_frame_the_page(redis: Any) -> None:
    app = make_app(
        redis, agent_frame_ancestors="https://flex.twilio.com, https://*.crm.example.com"
    )
    response = app.test_client().get("/agent")
    policy = _policy(response.headers["Content-Security-Policy"])
    assert policy["frame-ancestors"] == [
        "'self'",
        "https://flex.twilio.com",
        "https://*.crm.example.com",
    ]
    assert "X-Frame-Options" not in response.headers  # it cannot name another origin


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "http://crm.example.com",
        "https://crm.example.com/panel",
        "'unsafe-inline'",
        "https://crm.example.com;script-src *",
    ],
)
def test_a_frame_ancestor_that_is_not_an_https_origin_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^IVR_AGENT_FRAME_ANCESTORS: .*https origin"):
        load_settings(agent_frame_ancestors=value)
