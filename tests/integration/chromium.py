"""Debian's Chromium, driven by Playwright, for the browser tests; installed here when missing.

Playwright's own browser download (`playwright install`) needs a CDN this project cannot count
on, and the README's one test command must work on a fresh machine: so the tests install the
distribution's `chromium` with apt-get themselves (CI runs as root) and fail, loudly and with
apt's own words, when they cannot. A browser test never skips. `IVR_TEST_CHROMIUM` points at
another Chromium (a developer's laptop); then nothing is installed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

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
#: apt-get update plus the install took about 40 s here; a slow mirror gets far longer.
APT_TIMEOUT = 900
_APT = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300"]


def _apt(*args: str) -> None:
    command = [*_APT, *args]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"installing chromium for the browser tests: {' '.join(command)}: {exc}")
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        pytest.fail(
            f"installing chromium for the browser tests: {' '.join(command)} exited "
            f"{done.returncode}:\n{output}",
            pytrace=False,
        )


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
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(
            f"the browser tests need Chromium at {DEBIAN_CHROMIUM}: as root on Debian or Ubuntu "
            "they install it themselves; elsewhere install it, or set IVR_TEST_CHROMIUM to "
            "a Chromium or Chrome executable",
            pytrace=False,
        )
    started = time.monotonic()
    _apt("update")
    _apt("install", "-y", "--no-install-recommends", "chromium")
    if not os.access(DEBIAN_CHROMIUM, os.X_OK):
        pytest.fail(f"apt-get installed chromium, but {DEBIAN_CHROMIUM} is not there")
    print(f"installed chromium in {time.monotonic() - started:.0f} s")
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
