"""The agent screen pop in a real headless Chromium, for a real call in progress.

Real gunicorn, a real Redis and a real rq worker; the caller is the simulator, signing every
webhook like Twilio, and stays on the line (on hold in the queue) while the test looks at the
page. The agent opens `/agent#ref=<ref>` (the reference the call's task carries), signs in with
their token, and never reloads: the page must change by itself as the call goes on.

What an agent must never see: anything personal before the caller proved who they are; after,
more than the policy (flows/agents.yaml) allows their role at the call's assurance; a call of a
queue their role does not serve, or a call that is over.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

import pytest
import redis
import requests
from playwright.sync_api import Browser, BrowserContext, Page, expect

from ivr.outbox import Outbox
from ivr.simulator import FAKE_ACCOUNT_SID, CallPlayer, CallResult, Gather, Keys
from ivr.simulator.phone import Phone
from ivr.simulator.player import CallerInput
from ivr.store.agents import AgentDirectory
from ivr.store.customers import Customer
from tests.integration.chromium import launched_chromium
from tests.support import make_player, seed_customer, sign

ACCOUNT = "12345678"
PHONE = "+14155550100"
CALLING_FROM = "+14155550123"  # not the number on file
PIN = "583920"
FIRST_NAME = "Ada"
#: Customer data is whatever the CRM holds: a name with markup in it must show as those
#: characters, never become an element (the page sets text, it never parses HTML).
NAME = f'{FIRST_NAME} <b id="injected">Lovelace</b>'
ADDRESS = "12 St James's Square, London"
EMAIL = "ada@example.com"

#: Everything personal an agent could see, as it could appear on a page.
PERSONAL = (FIRST_NAME, "Lovelace", "injected", ADDRESS, "James", ACCOUNT, PHONE, "5550100", EMAIL)

METHOD_NAMES = {"pin": "PIN", "sms_otp": "Code by text message"}
NOTHING_TO_SHOW = "No call to show for this reference and token."
NOT_AUTHENTICATED = "Not authenticated"
#: The page asks every 2 s: a change must show within two polls and a slow answer.
UPDATE_BOUND_MS = 7000


# --------------------------------------------------------------------------------------------
# Fixtures: the customer, agents of two roles, the stack, the browser
# --------------------------------------------------------------------------------------------


@pytest.fixture
def customer(redis_url: str, pin_hash: str) -> Customer:
    return seed_customer(
        redis_url,
        Customer(
            account=ACCOUNT,
            phone=PHONE,
            email=EMAIL,
            name=NAME,
            address=ADDRESS,
            pin_hash=pin_hash,
        ),
    )


@pytest.fixture
def tokens(rdb: redis.Redis) -> dict[str, str]:
    """One agent per role, made as `ivr agents add` makes them: role -> token."""
    agents = AgentDirectory(rdb)
    return {role: agents.add(f"{role}-1", role) for role in ("agent", "specialist")}


@pytest.fixture
def web(web_factory, outbox_path):
    return web_factory({"IVR_OUTBOX": str(outbox_path)})


@pytest.fixture
def worker(worker_factory, outbox_path):
    return worker_factory({"IVR_OUTBOX": str(outbox_path)})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=UPDATE_BOUND_MS)
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def contexts(browser: Browser) -> Iterator[Callable[[], BrowserContext]]:
    """`contexts()` opens a browser profile of its own (its own sessionStorage): one agent."""
    opened: list[BrowserContext] = []

    def open_one() -> BrowserContext:
        context = browser.new_context(viewport={"width": 720, "height": 640}, timezone_id="UTC")
        context.set_default_timeout(UPDATE_BOUND_MS)
        opened.append(context)
        return context

    yield open_one
    for context in opened:
        context.close()


# --------------------------------------------------------------------------------------------
# A caller on the line, answering when the test says so
# --------------------------------------------------------------------------------------------

Answer = CallerInput | Callable[[Gather], CallerInput]


@dataclass
class LiveCall:
    """A call played in a thread by the simulator, whose caller answers each question only when
    the test gives the answer, so the test can look at the agent page at any point of the call.
    No status callback is sent until `hang_up`: an enqueued caller is on hold, not gone."""

    player: CallPlayer
    auth_token: str
    rdb: redis.Redis
    answers: queue.Queue[Answer] = field(default_factory=queue.Queue)
    asked: queue.Queue[str] = field(default_factory=queue.Queue)
    results: list[CallResult] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._play, daemon=True)
        self._thread.start()

    def _play(self) -> None:
        self.results.append(self.player.play(self._answer))

    def _answer(self, gather: Gather, heard_so_far: list[str]) -> CallerInput | None:
        assert gather.action is not None
        self.asked.put(urlsplit(gather.action).path.rsplit("/", 1)[-1])
        while not self.closed.is_set():
            try:
                answer = self.answers.get(timeout=0.1)
            except queue.Empty:
                continue
            return answer(gather) if callable(answer) else answer
        return None  # the test is over: the caller falls silent and the IVR ends the call

    def answer(self, *answers: Answer) -> None:
        for item in answers:
            self.answers.put(item)

    def wait_asked(self, step: str, timeout: float = 30) -> None:
        """Until the IVR asks the question of `step`, the earlier answers all taken."""
        while self.asked.get(timeout=timeout) != step:
            pass

    def finished(self, timeout: float = 30) -> CallResult:
        self._thread.join(timeout)
        assert self.results, "the call did not end"
        return self.results[0]

    @property
    def ref(self) -> str:
        """The call's opaque reference, as its task hands it to the agent."""
        refs = [
            key.decode().removeprefix("ivr:callref:")
            for key in self.rdb.scan_iter(match="ivr:callref:*")
            if self.rdb.get(key) == self.player.call_sid.encode()
        ]
        assert len(refs) == 1, refs
        return refs[0]

    def hang_up(self) -> None:
        """Twilio's status callback: the caller on hold hung up."""
        url = self.player.status_url
        params = {
            "CallSid": self.player.call_sid,
            "AccountSid": FAKE_ACCOUNT_SID,
            "From": self.player.from_number,
            "To": self.player.to_number,
            "CallStatus": "completed",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        headers = sign(self.auth_token, url, params)
        assert requests.post(url, data=params, headers=headers, timeout=10).status_code == 204

    def close(self) -> None:
        self.closed.set()
        self._thread.join(30)


@pytest.fixture
def live_call(web, auth_token, rdb) -> Iterator[Callable[[], LiveCall]]:
    """`live_call()` rings the IVR from a number not on file; the caller waits to be told."""
    started: list[LiveCall] = []

    def start() -> LiveCall:
        player = make_player(web.base_url, auth_token, from_number=CALLING_FROM, send_status=False)
        started.append(LiveCall(player, auth_token, rdb))
        return started[-1]

    yield start
    for call in started:
        call.close()


def to_the_card_code_prompt(call: LiveCall) -> None:
    """The caller keys the PIN, asks for card services and takes a code by text message."""
    call.answer(Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{PIN}#"), Keys("2"), Keys("1"))
    call.wait_asked("sms_code")


def code_from(phone: Phone) -> Callable[[Gather], CallerInput]:
    """At the code prompt: the code that arrived on the phone, keyed in."""

    def answer(gather: Gather) -> CallerInput:
        code = phone.latest_code()
        assert code is not None, f"no code on the phone: {phone.outbox.path}"
        return Keys(f"{code}#")

    return answer


# --------------------------------------------------------------------------------------------
# The agent's page
# --------------------------------------------------------------------------------------------


@dataclass
class AgentScreen:
    page: Page
    errors: list[str]

    def console(self, kind: str, text: str) -> None:
        # A refused read is a 404 the browser reports on its console; a script error or a
        # Content-Security-Policy violation is a defect.
        if kind == "error" and not text.startswith("Failed to load resource"):
            self.errors.append(text)

    def assert_no_script_errors(self) -> None:
        assert self.errors == [], self.errors


def agent_screen(
    contexts: Callable[[], BrowserContext], base_url: str, ref: str, token: str
) -> AgentScreen:
    """An agent opens the link of the task and signs in with their token."""
    page = contexts().new_page()
    screen = AgentScreen(page, [])
    page.on("pageerror", lambda error: screen.errors.append(str(error)))
    page.on("console", lambda message: screen.console(message.type, message.text))
    page.goto(f"{base_url}/agent#ref={ref}")
    expect(page.locator("#status")).to_have_text("Sign in with your agent token.")
    page.fill("#token", token)
    page.click("#signin button[type=submit]")
    expect(page.locator("#signin")).to_be_hidden()
    return screen


def page_text(page: Page) -> str:
    """What the agent sees, and everything in the document even if hidden."""
    return page.inner_text("body") + "\n" + page.content()


def proofs_as_shown(base_url: str, ref: str, token: str) -> list[str]:
    """The proofs the API reports for the call, as the page must word them: the method, and
    the time of the proof on the agent's clock (UTC in these browsers)."""
    answer = requests.get(
        f"{base_url}/api/calls/{ref}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).json()
    shown = []
    for proof in answer["methods"]:
        name = METHOD_NAMES[proof["method"]]
        at = proof["at"]
        shown.append(f"{name} at {datetime.fromisoformat(at):%H:%M:%S}" if at else name)
    return shown


def assert_shows_nothing_personal(page: Page) -> None:
    text = page_text(page)
    shown = [value for value in PERSONAL if value in text]
    assert shown == [], f"the page shows {shown}:\n{page.inner_text('body')}"


def fields(page: Page) -> dict[str, str]:
    """The allowed fields as the agent reads them: label -> value."""
    terms = page.locator("#fields dt").all_inner_texts()
    values = page.locator("#fields dd").all_inner_texts()
    return dict(zip(terms, values, strict=True))


# --------------------------------------------------------------------------------------------
# Before authentication nothing; after, only what the role may see; never a call that is over
# --------------------------------------------------------------------------------------------


class TestScreenPop:
    def test_the_page_shows_nothing_before_authentication_then_updates_to_the_allowed_fields(
        self, web, worker, customer, tokens, live_call, contexts
    ) -> None:
        call = live_call()
        call.answer(Keys(f"{ACCOUNT}#"), Keys("1"))
        call.wait_asked("pin")  # the account is claimed, nothing is proved
        screen = agent_screen(contexts, web.base_url, call.ref, tokens["agent"])
        page = screen.page

        expect(page.locator("#verdict")).to_contain_text(NOT_AUTHENTICATED)
        expect(page.locator("#fields")).to_be_hidden()
        assert_shows_nothing_personal(page)

        call.answer(Keys(f"{PIN}#"), Keys("1"))  # the PIN, then "balance"
        result = call.finished()
        assert result.outcome == "enqueued" and result.queue == "balances", result.transcript()

        # The page, never reloaded, now shows the call at one factor, and only that.
        expect(page.locator("#verdict")).to_have_text("Authenticated")
        expect(page.locator("#assurance")).to_have_text("One factor")
        expect(page.locator("#methods li")).to_have_count(1)
        methods = page.locator("#methods li").all_inner_texts()
        assert [method.split(" at ")[0] for method in methods] == ["PIN"]
        assert methods == proofs_as_shown(web.base_url, call.ref, tokens["agent"])
        assert fields(page) == {"First name": FIRST_NAME, "Account status": "active"}
        text = page_text(page)
        assert [value for value in PERSONAL if value in text and value != FIRST_NAME] == []

        # The caller on hold hangs up: the page lets go of the call by itself.
        call.hang_up()
        expect(page.locator("#status")).to_have_text(NOTHING_TO_SHOW)
        expect(page.locator("#call")).to_be_hidden()
        assert_shows_nothing_personal(page)
        screen.assert_no_script_errors()

    def test_a_specialist_and_an_agent_see_different_things_at_two_factors(
        self, web, worker, customer, tokens, live_call, contexts, outbox_path, tmp_path
    ) -> None:
        phone = Phone(Outbox(outbox_path))
        call = live_call()
        to_the_card_code_prompt(call)
        specialist = agent_screen(contexts, web.base_url, call.ref, tokens["specialist"])
        agent = agent_screen(contexts, web.base_url, call.ref, tokens["agent"])
        call.answer(code_from(phone))
        result = call.finished()
        assert result.outcome == "enqueued", result.transcript()
        assert result.queue == "card-services"

        page = specialist.page
        expect(page.locator("#assurance")).to_have_text("Two factors")
        expect(page.locator("#methods li")).to_have_count(2)
        methods = page.locator("#methods li").all_inner_texts()
        assert [method.split(" at ")[0] for method in methods] == ["PIN", "Code by text message"]
        assert methods == proofs_as_shown(web.base_url, call.ref, tokens["specialist"])
        assert page.locator("#fields dt").all_inner_texts() == [
            "First name",
            "Full name",
            "Account number",
            "Account status",
            "Address",
        ]
        assert fields(page) == {
            "First name": FIRST_NAME,
            "Full name": NAME,  # as characters: the markup in it is text, not an element
            "Account number": ACCOUNT,
            "Account status": "active",
            "Address": ADDRESS,
        }
        assert page.locator("#injected").count() == 0
        text = page_text(page)
        assert [value for value in (PHONE, "5550100", EMAIL) if value in text] == []
        page.screenshot(path=str(tmp_path / "screen-pop-specialist.png"), full_page=True)

        # The `agent` role, on the same call at the same moment, is refused outright: card
        # services is no queue of its.
        expect(agent.page.locator("#status")).to_have_text(NOTHING_TO_SHOW)
        assert fields(agent.page) == {}
        text = page_text(agent.page)
        assert [value for value in PERSONAL if value in text and value != FIRST_NAME] == []
        specialist.assert_no_script_errors()
        agent.assert_no_script_errors()

    def test_a_wrong_token_sees_no_call(
        self, web, worker, customer, tokens, live_call, contexts
    ) -> None:
        call = live_call()
        call.answer(Keys(f"{ACCOUNT}#"), Keys("1"), Keys(f"{PIN}#"), Keys("1"))
        assert call.finished().outcome == "enqueued"
        screen = agent_screen(contexts, web.base_url, call.ref, tokens["agent"][::-1])
        expect(screen.page.locator("#status")).to_have_text(NOTHING_TO_SHOW)
        assert_shows_nothing_personal(screen.page)
        screen.assert_no_script_errors()

    def test_an_agent_sees_no_call_of_card_services(
        self, web, worker, customer, tokens, live_call, contexts, outbox_path
    ) -> None:
        phone = Phone(Outbox(outbox_path))
        call = live_call()
        to_the_card_code_prompt(call)
        screen = agent_screen(contexts, web.base_url, call.ref, tokens["agent"])
        call.answer(code_from(phone))
        assert call.finished().queue == "card-services"
        expect(screen.page.locator("#status")).to_have_text(NOTHING_TO_SHOW)
        expect(screen.page.locator("#call")).to_be_hidden()
        assert_shows_nothing_personal(screen.page)
