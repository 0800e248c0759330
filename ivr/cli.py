"""The `ivr` command: serve, worker, dev, call, flows, customers, agents, audit.

Every expected failure (a bad setting, a bad flow, a weak PIN, Redis unreachable) ends with one
clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click
import redis.exceptions

from ivr.assurance import METHODS
from ivr.errors import FlowDefinitionError, IvrError

DATA_DIR = Path(".ivr")


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FlowDefinitionError as exc:
            raise click.ClickException(f"flow is not valid:\n{exc}") from None
        except IvrError as exc:
            raise click.ClickException(str(exc)) from None
        except redis.exceptions.ConnectionError as exc:
            raise click.ClickException(f"cannot reach Redis ({exc}); check REDIS_URL") from None


@click.group(cls=_Group)
@click.version_option(package_name="secure-ivr")
def cli() -> None:
    """secure-ivr: callers prove who they are before any agent picks up."""


def _settings(**overrides: Any) -> Any:
    from ivr.settings import load_settings

    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _redis_url() -> str:
    url = _settings().redis_url
    if not url:
        state = _dev_state()
        url = state.redis_url if state else None
    if not url:
        raise IvrError("REDIS_URL: not set; export it, or start `ivr dev` first")
    return url


def _redis() -> Any:
    from ivr.runtime import connect_redis

    client = connect_redis(_redis_url())
    client.ping()
    return client


def _dev_state() -> Any:
    from ivr.devserver import DevState

    return DevState.read(DATA_DIR)


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option(
    "--port",
    type=int,
    default=lambda: int(os.environ.get("PORT", "8000")),
    show_default="$PORT or 8000",
)
@click.option("--workers", type=int, default=2, show_default=True)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the webhooks with gunicorn against REDIS_URL (production)."""
    settings = _settings()
    if not settings.redis_url:
        raise IvrError("REDIS_URL: not set; `ivr serve` needs a Redis (or use `ivr dev`)")
    if not settings.twilio_auth_token:
        raise IvrError("TWILIO_AUTH_TOKEN: not set; without it every webhook would be refused")
    from ivr.app import agent_policy_for, check_delivery_settings, load_checked_flow

    flow = load_checked_flow(settings)  # fail here, in one line, not in every gunicorn worker
    check_delivery_settings(flow, settings)
    agent_policy_for(settings)
    if not (settings.public_url or settings.allowed_hosts):
        raise IvrError(
            "IVR_PUBLIC_URL: not set; set it to the https URL Twilio calls (or list this "
            "service's host names in IVR_ALLOWED_HOSTS), so that no other host's signature counts"
        )
    for method, backend in _outbox_methods(flow, settings):
        click.echo(
            f"warning: {method} goes to the development outbox ({backend}=outbox): "
            f"codes are written to {settings.outbox}, never sent",
            err=True,
        )
    from ivr.processes import web_command

    argv = web_command(f"{host}:{port}", workers)
    os.execvp(argv[0], argv)


def _outbox_methods(flow: Any, settings: Any) -> list[tuple[str, str]]:
    from ivr.flows.schema import AuthenticateStep

    backends = {
        "sms_otp": ("IVR_SMS_BACKEND", settings.sms_backend),
        "email_otp": ("IVR_EMAIL_BACKEND", settings.email_backend),
        "callback": ("IVR_CALL_BACKEND", settings.call_backend),
    }
    methods = sorted({s.method for s in flow.steps.values() if isinstance(s, AuthenticateStep)})
    return [(m, backends[m][0]) for m in methods if m in backends and backends[m][1] == "outbox"]


@cli.command()
@click.option("--url", help="Redis URL (default: REDIS_URL, else the running `ivr dev`).")
@click.option("--name", help="Worker name (default: a random one).")
@click.option("--burst", is_flag=True, help="Work until the queue is empty, then exit.")
def worker(url: str | None, name: str | None, burst: bool) -> None:
    """Run an rq worker on the `ivr` queue (one-time codes, callbacks); it rides out a Redis
    restart, and exits non-zero if Redis stays away."""
    from ivr import worker as rq_worker

    _settings()  # a bad setting stops here, in one line, not in every job
    rq_worker.run(url or _redis_url(), name=name, burst=burst)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default=True)
def dev(host: str, port: int, data_dir: Path) -> None:
    """Run Redis, the web server and a worker locally, with demo customers."""
    from ivr import devserver

    devserver.run(_settings(), data_dir, host, port, click.echo)


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
    from ivr.simulator import CallPlayer
    from ivr.simulator.phone import Phone

    target = _call_target(base_url, in_process)
    phone = Phone(Outbox(target.outbox))
    echo = _print_event if verbose else _print_quietly
    source: _Caller = (
        _Scripted(list(inputs), confidence, phone) if inputs else _Interactive(confidence, phone)
    )
    player = CallPlayer(
        target.transport,
        target.base_url,
        target.token,
        from_number=from_number,
        to_number=to_number,
        observer=echo,
        send_status=not hold,
    )
    result = player.play(source)
    _raise_for_error(result)
    _stay_on_hold(player, result, target, hold)
    if result.outcome == "hung_up" and source.expects_call_back(result.heard):
        click.echo("(waiting for a call back to the number on file...)")
        ring = phone.wait_for_call(timeout=15)
        source.show_arrivals()
        if ring is None:
            raise IvrError("no call back arrived within 15 s; is the worker running?")
        click.echo(f"(you answer the call from {ring.to})")
        back = CallPlayer(
            target.transport,
            target.base_url,
            target.token,
            call_sid=ring.call_sid,
            voice_path="/voice/callback",
            from_number=target.caller_id,
            to_number=ring.to,
            extra_params={"Direction": "outbound-api"},
            observer=echo,
            send_status=not hold,
        )
        answered = back.play(source)
        _raise_for_error(answered)
        _stay_on_hold(back, answered, target, hold)


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
        from ivr.devserver import dev_secret

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
        return bool(heard) and "call you back" in heard[-1].lower()


class _Scripted(_Caller):
    def __init__(self, inputs: list[str], confidence: float, phone: Any) -> None:
        super().__init__(confidence, phone)
        self.inputs = inputs

    def __call__(self, gather: Any, heard_so_far: list[str]) -> Any:
        self.show_arrivals()
        if not self.inputs:
            raise IvrError("the IVR asked for more input than the -i answers given")
        return self.parse(self.inputs.pop(0))

    def expects_call_back(self, heard: list[str]) -> bool:
        return bool(self.inputs)


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


@cli.group()
def flows() -> None:
    """Check call flow files."""


@flows.command("check")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def flows_check(paths: tuple[Path, ...]) -> None:
    """Prove every flow safe: no queue reachable without authentication, no personal prompts.

    The agent policy (agents.yaml) among them is checked as a policy."""
    from ivr.auth.agent_policy import AGENT_POLICY_FILE, load_agent_policy
    from ivr.errors import AgentPolicyError
    from ivr.flows.checks import check_flow
    from ivr.flows.loader import load_flow_with_marks

    files: list[Path] = []
    for path in paths or (Path("flows"),):
        files.extend(
            sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        )
    if not files:
        raise IvrError("no flow files (*.yaml) found")
    failed = 0
    for file in files:
        try:
            if file.name == AGENT_POLICY_FILE:
                load_agent_policy(file)
                problems = []
            else:
                flow, marks = load_flow_with_marks(file)
                problems = check_flow(flow, marks, str(file))
        except (FlowDefinitionError, AgentPolicyError) as exc:
            problems = exc.problems
        for problem in problems:
            click.echo(str(problem), err=problem.severity == "error")
        if any(p.severity == "error" for p in problems):
            failed += 1
        else:
            click.echo(f"ok  {file}")
    if failed:
        raise click.ClickException(f"{failed} of {len(files)} flow file(s) failed the checks")


@cli.group()
def customers() -> None:
    """Manage the customer directory in REDIS_URL."""


def _secret_options(fn: Any) -> Any:
    fn = click.option("--passcode", help="Spoken passcode; '-' to type it hidden.")(fn)
    return click.option("--pin", help="Keypad PIN; '-' to type it hidden.")(fn)


def _hashed_secrets(pin: str | None, passcode: str | None) -> dict[str, str]:
    from ivr.auth.knowledge import enrol
    from ivr.runtime import make_hasher

    settings = _settings()
    hasher = make_hasher(settings)
    out = {}
    for method, value in (("pin", pin), ("passcode", passcode)):
        if value is not None:
            secret = _maybe_prompt(value, method.capitalize())
            out[f"{method}_hash"] = enrol(
                hasher, method, secret, pin_min_length=settings.pin_min_length
            )
    return out


def _maybe_prompt(value: str, label: str) -> str:
    if value != "-":
        return value
    return click.prompt(label, hide_input=True, confirmation_prompt=True)


@customers.command("add")
@click.argument("account")
@click.option("--phone", required=True, help="Phone number on file, E.164 (+14155550100).")
@_secret_options
@click.option("--email")
@click.option("--name")
@click.option("--address")
def customers_add(
    account: str,
    phone: str,
    pin: str | None,
    passcode: str | None,
    email: str | None,
    name: str | None,
    address: str | None,
) -> None:
    """Add a customer; ACCOUNT is the number a caller keys in."""
    from ivr.store.customers import Customer, RedisCustomerDirectory

    hashes = _hashed_secrets(pin, passcode)
    RedisCustomerDirectory(_redis()).add(
        Customer(account=account, phone=phone, email=email, name=name, address=address, **hashes)
    )
    click.echo(f"added {account}" + _factors(hashes))


@customers.command("set")
@click.argument("account")
@click.option("--phone")
@_secret_options
@click.option("--email")
@click.option("--name")
@click.option("--address")
def customers_set(account: str, **options: str | None) -> None:
    """Change a customer's profile or secrets."""
    from ivr.store.customers import RedisCustomerDirectory

    hashes = _hashed_secrets(options.pop("pin"), options.pop("passcode"))
    changes = {k: v for k, v in options.items() if v is not None} | hashes
    if not changes:
        raise IvrError("nothing to change; give at least one option")
    RedisCustomerDirectory(_redis()).update(account, **changes)
    click.echo(f"updated {account}: {', '.join(sorted(k.removesuffix('_hash') for k in changes))}")


@customers.command("reset")
@click.argument("account")
@click.option("--method", type=click.Choice([*METHODS, "all"]), default="all", show_default=True)
def customers_reset(account: str, method: str) -> None:
    """Clear a locked factor's failure count (after the customer proved who they are)."""
    from ivr.store.counters import FailureCounter
    from ivr.store.customers import RedisCustomerDirectory

    client = _redis()
    if RedisCustomerDirectory(client).get(account) is None:
        raise IvrError(f"no customer with account number {account}")
    counter = FailureCounter(client)
    for name in METHODS if method == "all" else (method,):
        counter.reset(account, name)
    click.echo(f"reset {method} failures for {account}")


@customers.command("remove")
@click.argument("account")
def customers_remove(account: str) -> None:
    """Remove a customer and their secrets."""
    from ivr.store.customers import RedisCustomerDirectory

    RedisCustomerDirectory(_redis()).remove(account)
    click.echo(f"removed {account}")


@customers.command("show")
@click.argument("account")
def customers_show(account: str) -> None:
    """Show a customer's record; secrets only as set / not set."""
    from ivr.store.counters import FailureCounter
    from ivr.store.customers import RedisCustomerDirectory

    client = _redis()
    customer = RedisCustomerDirectory(client).get(account)
    if customer is None:
        raise IvrError(f"no customer with account number {account}")
    counter = FailureCounter(client)
    for field in ("account", "phone", "email", "name", "address"):
        click.echo(f"{field:12} {getattr(customer, field) or '-'}")
    for method in METHODS:
        failures = counter.count(account, method)
        if method in ("pin", "passcode"):
            state = "set" if customer.secret_hash(method) else "not set"
            click.echo(f"{method:12} {state}, {failures} consecutive failures")
        elif failures:
            click.echo(f"{method:12} {failures} consecutive failures")


@cli.group()
def agents() -> None:
    """Manage agent tokens for the agent API (GET /api/calls/<ref>) in REDIS_URL."""


def _policy_roles() -> list[str]:
    from ivr.app import agent_policy_for, agent_policy_path

    settings = _settings()
    policy = agent_policy_for(settings)
    if policy is None:
        raise IvrError(
            f"IVR_AGENT_POLICY: no agent policy at {agent_policy_path(settings)}; "
            "create it (see flows/agents.yaml) or point IVR_AGENT_POLICY at it"
        )
    return sorted(policy.roles)


def _show_token(token: str, what: str) -> None:
    click.echo(f"{what}; the token is shown only this once:", err=True)
    click.echo(token)


@agents.command("add")
@click.argument("name")
@click.option("--role", required=True, help="A role the agent policy names (e.g. agent).")
def agents_add(name: str, role: str) -> None:
    """Add an agent and print its token, once (the token alone goes to stdout)."""
    from ivr.store.agents import AgentDirectory

    roles = _policy_roles()
    if role not in roles:
        raise IvrError(f"role {role!r} is not in the agent policy (roles: {', '.join(roles)})")
    token = AgentDirectory(_redis()).add(name, role)
    _show_token(token, f"added agent {name} ({role})")


@agents.command("list")
def agents_list() -> None:
    """List agents: name, role, when added. Never a token."""
    from ivr.store.agents import AgentDirectory

    listed = AgentDirectory(_redis()).all()
    if not listed:
        click.echo("(no agents; add one with `ivr agents add NAME --role ROLE`)")
    for agent in listed:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(agent.created))
        click.echo(f"{agent.name:24} {agent.role:16} {created}")


@agents.command("remove")
@click.argument("name")
def agents_remove(name: str) -> None:
    """Remove an agent; its token stops working at once."""
    from ivr.store.agents import AgentDirectory

    AgentDirectory(_redis()).remove(name)
    click.echo(f"removed agent {name}")


@agents.command("rotate")
@click.argument("name")
def agents_rotate(name: str) -> None:
    """Give an agent a new token; the old one stops working at once."""
    from ivr.store.agents import AgentDirectory

    token = AgentDirectory(_redis()).rotate(name)
    _show_token(token, f"new token for agent {name}, the old one is revoked")


def _factors(hashes: dict[str, str]) -> str:
    names = [k.removesuffix("_hash") for k in hashes]
    return f" with {' and '.join(names)}" if names else " (no PIN or passcode yet)"


@cli.command()
@click.argument("call_sid", metavar="[CALL]", required=False)
@click.option("--account", help="Only this claim id: an account number or an unmatched-... id.")
@click.option("--since", metavar="AGE", help="Only events newer than this: 90s, 30m, 1h, 2d.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "-n", "--limit", type=int, default=100, show_default=True, help="At most this many, newest."
)
def audit(
    call_sid: str | None, account: str | None, since: str | None, as_json: bool, limit: int
) -> None:
    """Show the audit trail (REDIS_URL): every event of one CALL, of an --account, or all."""
    from ivr.audit_view import Query, json_lines, parse_since, table
    from ivr.store.audit import AuditLog

    try:
        query = Query(call_sid, account)
        age = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise IvrError(str(exc)) from None
    if limit < 1:
        raise IvrError(f"-n: {limit} is not a count; give 1 or more")
    start = time.time() - age if age is not None else None
    events = AuditLog(_redis()).search(query, since=start, limit=limit)
    if not events:
        click.echo("(no audit events match)", err=True)
        return
    lines = json_lines(events) if as_json else table(events, with_call=call_sid is None)
    for line in lines:
        click.echo(line)


def main() -> None:
    cli(prog_name="ivr")
