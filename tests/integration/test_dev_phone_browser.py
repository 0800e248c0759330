"""The browser phone (`/dev/phone`) in a real headless Chromium, against the real stack: gunicorn
with IVR_DEV_PHONE (as `ivr dev` starts it), a real Redis and a real rq worker that texts the
code to the development outbox.

A person dials, keys the demo account and PIN on the keypad, asks for a card change, reads the
texted code in the page's outbox and keys it in, and reaches the card-services queue; then saves
the call as a scenario, which `ivr flows test` replays and passes (with a code of its own). With
IVR_UPDATE_SCREENSHOTS=1 the run refreshes docs/dev-phone.png, the picture the README shows; a
plain run leaves the repository as it found it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from ivr.auth.knowledge import SecretHasher
from ivr.dev.customers import DEMO_CUSTOMERS, customer_record
from ivr.flows.scenario_runner import run_file
from tests.integration.chromium import launched_chromium
from tests.integration.conftest import FLOWS_DIR, REPO_ROOT
from tests.support import seed_customer

ADA = DEMO_CUSTOMERS[0]
SCREENSHOT = REPO_ROOT / "docs" / "dev-phone.png"
#: A step that holds for a texted code waits for the worker: a few seconds at most.
STEP_MS = 15000


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    """A copy of the shipped flows, so the saved scenario lands in the test's own tests/."""
    copy = tmp_path / "flows"
    shutil.copytree(FLOWS_DIR, copy)
    return copy


@pytest.fixture
def stack(web_factory, worker_factory, outbox_path: Path, flows_dir: Path, redis_url, pepper):
    env = {"IVR_OUTBOX": str(outbox_path), "IVR_FLOWS_DIR": str(flows_dir)}
    seed_customer(redis_url, customer_record(ADA, SecretHasher(pepper=pepper)))
    worker_factory(env)
    return web_factory({**env, "IVR_DEV_PHONE": "1"})


@pytest.fixture
def page(stack) -> Iterator[Page]:
    expect.set_options(timeout=STEP_MS)
    browser: Browser
    with launched_chromium() as browser:
        context = browser.new_context(viewport={"width": 1100, "height": 860}, timezone_id="UTC")
        context.set_default_timeout(STEP_MS)
        page = context.new_page()
        page.goto(f"{stack.base_url}/dev/phone")
        yield page
        context.close()


def _key_in(page: Page, keys: str) -> None:
    for key in keys:
        page.locator(f'#keypad .key[data-key="{key}"]').click()


def test_a_call_played_in_the_browser_reaches_the_queue_and_saves_as_a_scenario(
    page: Page, flows_dir: Path
) -> None:
    transcript = page.locator("#transcript")
    page.locator("#verstat").select_option("TN-Validation-Passed-A")
    page.locator("#dial-button").click()
    expect(transcript).to_contain_text("Welcome to Example Bank.")
    expect(page.locator("#status")).to_contain_text("The IVR is listening")

    _key_in(page, f"{ADA.account}#")  # the finish key sends what was typed
    expect(transcript).to_contain_text("For PIN, press 1.")
    _key_in(page, "1")
    expect(transcript).to_contain_text("Enter your PIN")
    _key_in(page, f"{ADA.pin}#")
    expect(transcript).to_contain_text("you are verified")
    _key_in(page, "2")
    expect(transcript).to_contain_text("Card changes need one more check")
    _key_in(page, "1")  # a code by text message; the worker sends it while the caller holds
    expect(transcript).to_contain_text("Please enter the code we sent you")

    texted = page.locator("#outbox li.sms").last
    expect(texted).to_contain_text("your verification code is")
    found = re.search(r"code is ([0-9]{6})", texted.inner_text())
    assert found, texted.inner_text()
    _key_in(page, found.group(1) + "#")
    expect(transcript).to_contain_text("card services")
    expect(page.locator("#status")).to_have_text(
        "In queue card-services (on hold: Hang up ends the call)."
    )

    page.locator("#show-twiml").check()
    expect(page.locator("#transcript li.twiml pre").last).to_contain_text("<Enqueue")
    page.locator("#show-twiml").uncheck()
    page.locator("#scenario-name").fill("a card change with a texted code, played in the browser")
    page.locator("#save-button").click()
    saved = page.locator("#saved")
    expect(saved).to_contain_text("Saved ")
    shot = page.screenshot(full_page=True)
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("IVR_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.write_bytes(shot)

    path = Path(saved.inner_text().splitlines()[0].removeprefix("Saved "))
    assert path.parent == flows_dir / "tests"
    text = path.read_text()
    assert "code: sms" in text and found.group(1) not in text
    results, *_ = run_file(path)
    assert [(r.name, r.failure) for r in results] == [
        ("a card change with a texted code, played in the browser", None)
    ]
    page.locator("#hangup").click()
    expect(page.locator("#status")).to_have_text("In queue card-services.")


def test_the_phone_is_not_served_without_dev_mode(web) -> None:
    assert requests.get(f"{web.base_url}/dev/phone", timeout=5).status_code == 404
    response = requests.post(f"{web.base_url}/dev/phone/dial", json={}, timeout=5)
    assert response.status_code == 404
