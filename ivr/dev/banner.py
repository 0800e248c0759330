"""What `ivr dev` prints: the banner once the stack answers, the `ivr dev env` lines, and how
to spell the `ivr` command in both."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import sys
from pathlib import Path

from ivr.dev import Say
from ivr.dev.customers import DEMO_CUSTOMERS, DemoCustomer
from ivr.dev.state import DevState


def ivr_command() -> str:
    """How to run `ivr` from the current directory, as this process was run: `.venv/bin/ivr`
    after the README's install, `ivr` when that is the one on PATH."""
    argv0 = Path(sys.argv[0])
    script = argv0 if argv0.name == "ivr" else Path(sys.executable).parent / "ivr"
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m ivr"
    script = script.absolute()
    on_path = shutil.which("ivr")
    if on_path and Path(on_path).absolute() == script:
        return "ivr"
    with contextlib.suppress(ValueError):
        return shlex.quote(str(script.relative_to(Path.cwd())))
    return shlex.quote(str(script))


def env_lines(state: DevState) -> list[str]:
    """`export` lines of the running stack, for `eval "$(ivr dev env)"`."""
    return [
        f"# the `ivr dev` answering at {state.base_url} (pid {state.pid})",
        f"export REDIS_URL={shlex.quote(state.redis_url)}",
        f"export TWILIO_AUTH_TOKEN={shlex.quote(state.auth_token)}",
        f"export IVR_API_TOKEN={shlex.quote(state.api_token)}",
    ]


def banner(
    say: Say, base_url: str, added: list[DemoCustomer], agent_tokens: dict[str, str]
) -> None:
    say("")
    say(f"secure-ivr is answering calls at {base_url}/voice")
    say("Demo customers (account / phone on file / PIN / spoken passcode):")
    for demo in DEMO_CUSTOMERS:
        say(f'  {demo.account}  {demo.phone}  PIN {demo.pin}  passcode "{demo.passcode}"')
    if not added:
        say("  (already in Redis from an earlier run)")
    say(f"Agent screen pop: {base_url}/agent  (sign in with a token; new ones each start)")
    for role, token in agent_tokens.items():
        say(f"  {role:11} {token}")
    say(f"Play a call in the browser: {base_url}/dev/phone")
    ivr = ivr_command()
    say("Next, in another terminal in this folder:")
    say(f"  {ivr} call -i 12345678# -i 1 -i 583920# -i 1")
    say("    plays a PIN call to the balance queue (without -i it asks you at each prompt;")
    say("    --hold keeps the call in the queue for the agent page)")
    say(f'  eval "$({ivr} dev env)"')
    say("    exports REDIS_URL, TWILIO_AUTH_TOKEN and IVR_API_TOKEN of this stack, for curl")
    say(f"    and `{ivr} customers`")
    say("Stop with Ctrl-C (closing this terminal does the same): everything started here stops.")
