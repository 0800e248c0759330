"""Engine actions -> TwiML. The output is parsed back as XML and its structure asserted."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from twilio.twiml.voice_response import VoiceResponse

import ivr.flows.render as render_module
from ivr.flows.engine import Action, Ask, CallState, Engine, Enqueue, Hangup, Hold, Say
from ivr.flows.loader import load_flow
from ivr.flows.render import apology, render
from ivr.flows.schema import Flow

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT = load_flow(REPO_ROOT / "flows" / "default.yaml")
BASE_URL = "https://ivr.example.com/voice/step"


def url_for(step: str, poll: bool = False) -> str:
    kind = "poll" if poll else "step"
    return f"https://ivr.example.com/voice/{kind}/{step}?seq=3"


def parse(twiml: str) -> ET.Element:
    root = ET.fromstring(twiml)  # noqa: S314 - our own output, parsed to check its structure
    assert root.tag == "Response"
    return root


def tags(root: ET.Element) -> list[str]:
    return [child.tag for child in root]


def with_voice(flow: Flow, voice: str | None, language: str = "en-US") -> Flow:
    return flow.model_copy(update={"voice": voice, "language": language})


PIN_ASK = Ask(step="pin", input="dtmf", prompt="Enter your PIN.", timeout=7)
MENU_ASK = Ask(
    step="main_menu",
    input="dtmf speech",
    prompt="Press 1 or say balance.",
    finish_on_key=None,
    num_digits=1,
    timeout=5,
    speech=True,
    hints=("balance", "lost card"),
)
PASSCODE_ASK = Ask(
    step="passcode", input="speech", prompt="Say your passcode.", finish_on_key=None, speech=True
)


class TestGather:
    def test_gather_posts_to_the_step_url_then_redirects_there(self) -> None:
        root = parse(render([PIN_ASK], DEFAULT, url_for))
        assert tags(root) == ["Gather", "Redirect"]
        gather, redirect = root
        assert gather.get("action") == url_for("pin")
        assert gather.get("method") == "POST"
        assert gather.get("input") == "dtmf"
        assert gather.get("timeout") == "7"
        assert gather.get("finishOnKey") == "#"
        assert gather.get("numDigits") is None
        assert gather.get("speechTimeout") is None
        assert redirect.text == url_for("pin")
        assert redirect.get("method") == "POST"

    def test_the_url_is_built_for_the_asked_step(self) -> None:
        seen: list[str] = []

        def action_url(step: str, poll: bool) -> str:
            seen.append(step)
            return f"/voice/{step}"

        root = parse(render([MENU_ASK], DEFAULT, action_url))
        assert seen == ["main_menu"]
        assert root[0].get("action") == root[1].text == "/voice/main_menu"

    def test_prompt_is_spoken_inside_the_gather(self) -> None:
        root = parse(render([PIN_ASK], DEFAULT, url_for))
        (say,) = root[0]
        assert say.tag == "Say"
        assert say.text == "Enter your PIN."

    def test_menu_gather_takes_one_key_or_speech_with_hints(self) -> None:
        gather = parse(render([MENU_ASK], DEFAULT, url_for))[0]
        assert gather.get("input") == "dtmf speech"
        assert gather.get("numDigits") == "1"
        assert gather.get("finishOnKey") is None
        assert gather.get("speechTimeout") == "auto"
        assert gather.get("hints") == "balance, lost card"

    def test_speech_gather_without_hints(self) -> None:
        gather = parse(render([PASSCODE_ASK], DEFAULT, url_for))[0]
        assert gather.get("input") == "speech"
        assert gather.get("speechTimeout") == "auto"
        assert gather.get("hints") is None
        assert gather.get("finishOnKey") is None

    def test_the_url_is_escaped_and_survives_parsing(self) -> None:
        twiml = render([PIN_ASK], DEFAULT, lambda step, poll: f"/voice/step/{step}?a=1&seq=3")
        assert "a=1&amp;seq=3" in twiml
        assert parse(twiml)[0].get("action").endswith("?a=1&seq=3")  # type: ignore[union-attr]


class TestOtherVerbs:
    def test_enqueue_names_the_queue(self) -> None:
        root = parse(
            render([Say("Connecting you."), Enqueue("agent", "card-services")], DEFAULT, url_for)
        )
        assert tags(root) == ["Say", "Enqueue"]
        assert root[1].text == "card-services"

    def test_hangup(self) -> None:
        root = parse(render([Say("Goodbye."), Hangup()], DEFAULT, url_for))
        assert tags(root) == ["Say", "Hangup"]
        assert root[0].text == "Goodbye."
        assert len(root[1]) == 0
        assert not (root[1].text or "").strip()

    def test_actions_keep_their_order(self) -> None:
        actions: list[Action] = [Say("One."), Say("Two."), PIN_ASK]
        root = parse(render(actions, DEFAULT, url_for))
        assert tags(root) == ["Say", "Say", "Gather", "Redirect"]
        assert [root[0].text, root[1].text] == ["One.", "Two."]

    def test_no_actions_is_an_empty_response(self) -> None:
        assert len(parse(render([], DEFAULT, url_for))) == 0


class TestLanguageAndVoice:
    def test_language_on_every_say_and_gather(self) -> None:
        flow = with_voice(DEFAULT, None, language="en-GB")
        root = parse(render([Say("Hello."), PIN_ASK], flow, url_for))
        assert root[0].get("language") == "en-GB"
        assert root[1].get("language") == "en-GB"
        assert root[1][0].get("language") == "en-GB"

    def test_voice_on_every_say_when_set(self) -> None:
        flow = with_voice(DEFAULT, "Polly.Joanna")
        root = parse(render([Say("Hello."), PIN_ASK], flow, url_for))
        assert root[0].get("voice") == "Polly.Joanna"
        assert root[1][0].get("voice") == "Polly.Joanna"

    def test_no_voice_attribute_when_unset(self) -> None:
        flow = with_voice(DEFAULT, None)
        twiml = render([Say("Hello."), PIN_ASK], flow, url_for)
        assert "voice=" not in twiml


class TestEscaping:
    @pytest.mark.parametrize(
        "prompt",
        [
            "Press 1 if balance < 100 & card > 0.",
            "</Say><Dial>+15555550100</Dial><Say>",
            "Quotes \" and ' and ]]> too.",
        ],
    )
    def test_prompts_are_xml_escaped(self, prompt: str) -> None:
        ask = Ask(step="pin", input="dtmf", prompt=prompt)
        twiml = render([Say(prompt), ask], DEFAULT, url_for)
        root = parse(twiml)
        assert tags(root) == ["Say", "Gather", "Redirect"]
        assert root[0].text == prompt
        assert root[1][0].text == prompt
        assert root.find(".//Dial") is None


class TestBuiltWithTwilio:
    def test_twiml_comes_from_voice_response(self, monkeypatch: pytest.MonkeyPatch) -> None:
        built: list[VoiceResponse] = []

        class Spy(VoiceResponse):
            def __init__(self, **kwargs: object) -> None:
                super().__init__(**kwargs)
                built.append(self)

        monkeypatch.setattr(render_module, "VoiceResponse", Spy)
        twiml = render([Say("Hi."), PIN_ASK, Hangup()], DEFAULT, url_for)
        assert len(built) == 1
        assert twiml == str(built[0])

    def test_engine_start_renders_to_a_welcome_and_a_question(self) -> None:
        class Ports:
            def account_for_caller(self, caller: str) -> str | None:
                return None

            def verify(self, state: CallState, method: str, answer: str | None) -> bool:
                return False

        state = CallState(call_sid="CA1", caller="+14155550100", step=DEFAULT.start)
        root = parse(render(Engine(DEFAULT, Ports()).start(state), DEFAULT, url_for))
        assert tags(root) == ["Say", "Gather", "Redirect"]
        assert root[1].get("action") == url_for("identify")


class TestApology:
    def test_apology_says_sorry_and_hangs_up(self) -> None:
        root = parse(apology("Sorry, something went wrong. Please call again.", "es-ES"))
        assert tags(root) == ["Say", "Hangup"]
        assert root[0].text == "Sorry, something went wrong. Please call again."
        assert root[0].get("language") == "es-ES"

    def test_apology_escapes_its_message(self) -> None:
        root = parse(apology("A & B <C>"))
        assert root[0].text == "A & B <C>"
        assert tags(root) == ["Say", "Hangup"]


class TestHold:
    def test_hold_pauses_then_comes_back_to_the_poll_url(self) -> None:
        root = parse(render([Say("Please hold."), Hold("sms", 2)], DEFAULT, url_for))
        assert [child.tag for child in root] == ["Say", "Pause", "Redirect"]
        assert root[1].get("length") == "2"
        assert root[2].text == "https://ivr.example.com/voice/poll/sms?seq=3"
        assert root[2].get("method") == "POST"
