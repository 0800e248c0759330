"""`ivr call` plays a phone call the way Twilio would; `ivr outbox` shows what reached the phone."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import click

from ivr.cli import DATA_DIR, _dev_state, _settings, cli
from ivr.errors import IvrError


@cli.command()
@click.option("--url", "base_url", help="Base URL of the service (default: the running `ivr dev`).")
@click.option("--in-process", is_flag=True, help="Play against the app in this process.")
@click.option(
    "--from",
    "from_number",
    default="+15005550006",
    show_default=True,
    help="Caller ID the call comes from ('anonymous' works too).",
)
@click.option("--to", "to_number", default="+15005550001", show_default=True)
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="INPUT",
    help="Scripted answers in order: keys like '12345678#', 'say:purple elephant 42', "
    "or 'silence'. Without any, you are asked at each prompt.",
)
@click.option(
    "--confidence",
    type=click.FloatRange(0, 1),
    default=0.92,
    show_default=True,
    help="Speech recognition confidence of what you say.",
)
@click.option("-v", "--verbose", is_flag=True, help="Also show each webhook request.")
@click.option(
    "--hold",
    is_flag=True,
    help="Once in a queue, stay on hold (for the agent page) until you press Enter.",
)
def call(
    base_url: str | None,
    in_process: bool,
    from_number: str,
    to_number: str,
    inputs: tuple[str, ...],
    confidence: float,
    verbose: bool,
    hold: bool,
) -> None:
    """Play a phone call the way Twilio would: signed requests, keypad and speech.

    Texts, emails and calls sent to the customer show up as they arrive; `code` keys in the
    latest code received, and a call back to the number on file is answered.
    """
    from ivr.outbox import Outbox
    from ivr.simulator.phone import Phone, answering

    target = _call_target(base_url, in_process)
    phone = Phone(Outbox(target.outbox))
    echo = _print_event if verbose else _print_quietly
    source: _Caller = (
        _Scripted(list(inputs), confidence, phone) if inputs else _Interactive(confidence, phone)
    )
    result = _play(target, source, echo, hold, from_number=from_number, to_number=to_number)
    if result.outcome == "hung_up" and source.expects_call_back(result.heard):
        if isinstance(source, _Scripted) and not source.inputs:
            click.echo("(the IVR calls you back; add an answer for that call, e.g. -i 1)")
            return
        click.echo("(waiting for a call back to the number on file...)")
        ring = phone.wait_for_call(timeout=15)
        source.show_arrivals()
        if ring is None:
            raise IvrError("no call back arrived within 15 s; is the worker running?")
        click.echo(f"(you answer the call from {ring.to})")
        _play(
            target,
            source,
            echo,
            hold,
            from_number=target.caller_id,
            **answering(ring),
        )
    source.check_all_used()


def _play(target: _Target, source: _Caller, echo: Any, hold: bool, **leg: Any) -> Any:
    """One leg, the caller's own call or the call back they answer: both are signed for the
    same target, seen the same way, and with --hold wait in a queue the same way."""
    from ivr.simulator import CallPlayer

    player = CallPlayer(
        target.transport,
        target.base_url,
        target.token,
        observer=echo,
        send_status=not hold,
        **leg,
    )
    result = player.play(source)
    _raise_for_error(result)
    _stay_on_hold(player, result, target, hold)
    return result


def _stay_on_hold(player: Any, result: Any, target: Any, hold: bool) -> None:
    """With --hold, a call that reached a queue waits there, as a real caller does, so the
    agent page can show it; Enter hangs up. Any other call has hung up already."""
    if not hold:
        return
    if result.outcome != "enqueued":
        player.hang_up(result)
        return
    ref = _call_ref(result, target)
    if ref:
        click.echo(f"(on hold; the agent page: {target.base_url}/agent#ref={ref})")
    click.prompt("  press Enter to hang up", default="", show_default=False)
    player.hang_up(result)


def _call_ref(result: Any, target: Any) -> str | None:
    """The opaque reference the agent page asks by: in the task when TaskRouter is configured,
    else in the call's state (the running `ivr dev`'s Redis, or the in-process one)."""
    attributes = result.enqueue.attributes if result.enqueue else None
    if attributes and attributes.get("call_ref"):
        return str(attributes["call_ref"])
    if target.sessions is None:
        return None
    stored = target.sessions.load(result.call_sid)
    return stored.state.ref if stored is not None else None


def _raise_for_error(result: Any) -> None:
    if result.outcome == "error":
        raise IvrError(f"the service answered {result.error_status}: {result.error}")


class _Target:
    def __init__(
        self,
        token: str,
        transport: Any,
        base_url: str,
        outbox: Path,
        caller_id: str,
        sessions: Any = None,
    ) -> None:
        self.token = token
        self.transport = transport
        self.base_url = base_url
        self.outbox = outbox
        self.caller_id = caller_id
        self.sessions = sessions  # the calls' state, where this command can read it


def _call_target(base_url: str | None, in_process: bool) -> _Target:
    from ivr.simulator import HttpTransport, WsgiTransport

    settings = _settings()
    state = _dev_state()
    outbox = Path(state.outbox) if state else settings.outbox
    caller_id = settings.caller_id or "+15005550001"
    if in_process:
        from ivr.app import create_app

        token = settings.twilio_auth_token or (state.auth_token if state else "in-process-token")
        redis_url = settings.redis_url or (state.redis_url if state else None)
        if not redis_url:
            raise IvrError("REDIS_URL: not set; export it or start `ivr dev` for --in-process")
        from ivr.dev.state import dev_secret

        # Shared with `ivr dev` through its data directory, so its worker's codes match here.
        DATA_DIR.mkdir(exist_ok=True)
        code_key = settings.code_key or dev_secret(DATA_DIR, "code-key")
        app = create_app(
            settings.model_copy(
                update={"twilio_auth_token": token, "redis_url": redis_url, "code_key": code_key}
            )
        )
        sessions = app.extensions["ivr"].sessions
        return _Target(token, WsgiTransport(app), "http://localhost", outbox, caller_id, sessions)
    if base_url is None:
        if state is None:
            raise IvrError(
                "no running `ivr dev` found; start it, or pass --url and set TWILIO_AUTH_TOKEN"
            )
        from ivr.runtime import connect_redis
        from ivr.store.sessions import SessionStore

        sessions = SessionStore(connect_redis(state.redis_url), settings.session_ttl)
        return _Target(
            state.auth_token, HttpTransport(), state.base_url, outbox, caller_id, sessions
        )
    token = settings.twilio_auth_token or (state.auth_token if state else None)
    if not token:
        raise IvrError("TWILIO_AUTH_TOKEN: not set; requests must be signed like Twilio's")
    return _Target(token, HttpTransport(), base_url.rstrip("/"), outbox, caller_id)


class _Caller:
    """What the person playing the caller does; shows what reached their phone meanwhile."""

    def __init__(self, confidence: float, phone: Any) -> None:
        self.confidence = confidence
        self.phone = phone

    def show_arrivals(self) -> None:
        from ivr.simulator.phone import describe

        for message in self.phone.arrivals():
            click.echo(describe(message))

    def parse(self, text: str) -> Any:
        from ivr.simulator import Keys, Speech

        text = text.strip()
        if text in ("", "silence"):
            return None
        if text.lower().startswith("say:"):
            return Speech(text[4:].strip(), self.confidence)
        if text.removesuffix("#") == "code":
            code = self.phone.latest_code()
            if code is None:
                raise IvrError("`code`: no text or email with a code has arrived yet")
            return Keys(code + text.removeprefix("code"))
        return Keys(text)

    def expects_call_back(self, heard: list[str]) -> bool:
        """Whether the IVR's last words, as the call ended, promised a call back."""
        return bool(heard) and "call you back" in heard[-1].lower()

    def check_all_used(self) -> None:
        """After the last leg: a script the call did not get through is a mistake."""


class _Scripted(_Caller):
    def __init__(self, inputs: list[str], confidence: float, phone: Any) -> None:
        super().__init__(confidence, phone)
        self.inputs = inputs

    def __call__(self, gather: Any, heard_so_far: list[str]) -> Any:
        self.show_arrivals()
        if not self.inputs:
            raise IvrError("the IVR asked for more input than the -i answers given")
        return self.parse(self.inputs.pop(0))

    def check_all_used(self) -> None:
        if self.inputs:
            left = " ".join(f"-i {shlex.quote(answer)}" for answer in self.inputs)
            count = f"{len(self.inputs)} scripted answer{'s' if len(self.inputs) > 1 else ''}"
            raise IvrError(f"the call ended with {count} left unused: {left}")


class _Interactive(_Caller):
    def __call__(self, gather: Any, heard_so_far: list[str]) -> Any:
        self.show_arrivals()
        ways = []
        if gather.accepts_dtmf:
            ways.append("keys like 1234#, or code#")
        if gather.accepts_speech:
            ways.append("say:<words>")
        hint = " or ".join(ways) + ", or Enter for silence"
        while True:
            answer = click.prompt(f"  you [{hint}]", default="", show_default=False)
            try:
                return self.parse(answer)
            except (ValueError, IvrError) as exc:
                click.echo(f"  ({exc})")


def _print_event(kind: str, line: str) -> None:
    click.echo(line)


def _print_quietly(kind: str, line: str) -> None:
    if kind not in ("request", "pause"):
        click.echo(line)


@cli.command()
@click.option("-n", "--limit", type=int, default=10, show_default=True)
def outbox(limit: int) -> None:
    """Show what would have been sent (texts, emails, calls), newest first."""
    from ivr.outbox import Outbox
    from ivr.simulator.phone import describe

    state = _dev_state()
    path = Path(state.outbox) if state else _settings().outbox
    messages = Outbox(path).messages()[::-1][:limit]
    if not messages:
        click.echo(f"(the outbox at {path} is empty)")
    for message in messages:
        stamp = time.strftime("%H:%M:%S", time.localtime(message.at))
        click.echo(f"{stamp}  {describe(message)}")
