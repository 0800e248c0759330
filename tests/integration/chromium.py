"""Debian's Chromium, driven by Playwright, for the browser tests; installed here when missing.

Playwright's own browser download (`playwright install`) needs a CDN this project cannot count
on, so the tests install the distribution's `chromium` (tests/integration/debian.py).
`IVR_TEST_CHROMIUM` points at another Chromium (a developer's laptop); then nothing is
installed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.integration.debian import apt_install

DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
#: Without the background-networking flags Chromium keeps dialling Google's hosts, which this
#: network refuses; as root it needs --no-sandbox.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@functools.cache
def chromium_path() -> Path:
    """The Chromium to drive: IVR_TEST_CHROMIUM, else Debian's, installed now if missing."""
    given = os.environ.get("IVR_TEST_CHROMIUM")
    if given:
        if not os.access(given, os.X_OK):
            pytest.fail(f"IVR_TEST_CHROMIUM: {given} is not an executable Chromium", pytrace=False)
        return Path(given)
    if os.access(DEBIAN_CHROMIUM, os.X_OK):
        return DEBIAN_CHROMIUM
    apt_install(
        "chromium",
        f"the browser tests need Chromium at {DEBIAN_CHROMIUM}",
        "elsewhere install it, or set IVR_TEST_CHROMIUM to a Chromium or Chrome executable",
    )
    if not os.access(DEBIAN_CHROMIUM, os.X_OK):
        pytest.fail(f"apt-get installed chromium, but {DEBIAN_CHROMIUM} is not there")
    return DEBIAN_CHROMIUM


@contextmanager
def launched_chromium() -> Iterator[Browser]:
    """A headless Chromium with a fresh, empty profile, closed afterwards."""
    path = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(path), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
