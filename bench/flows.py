"""How long `ivr flows check` takes on a large flow (issue 9, "flow loading at scale").

    .venv/bin/python -m bench.flows [--steps 1000 --steps 10000] [--repeat 3] [--profile]

Writes a generated flow of each size to a temporary directory and runs the `ivr flows check`
command on it in this process, as an admin's CI would, reporting the CPU time
(`time.process_time`: the machine is shared, so wall time is noise) of the best and the median
run, split into loading (YAML and the model) and the checks. The generated flow is shaped like
the default one, grown: a main menu of departments, menus of up to eight choices under each,
and at the leaves intents, half of them queued at one factor and half behind a step-up menu
(text, call back, service code) to a two-factor queue, with a way back to the main menu from
every menu. It passes every check with no warning, so the figure is the cost of a clean run.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import click
from click.testing import CliRunner

from ivr.cli import cli
from ivr.flows.checks import check_flow
from ivr.flows.loader import load_flow_with_marks

DEPARTMENTS = 8
_FIXED = """name: large
start: welcome
authentication:
  max_failures: 2
  failure_route: other_route
"""
_HEAD_STEPS = """  welcome:
    kind: say
    say: Welcome to Example Bank.
    next: identify
  identify:
    kind: identify
    prompt: Please enter your account number, then pound.
    next: choose_method
    on_exhausted: goodbye
  choose_method:
    kind: menu
    input: dtmf speech
    prompt: For PIN, press 1 or say pin. For passcode, press 2 or say passcode.
    choices:
      - key: 1
        words: [pin, pin number]
        next: pin
      - key: 2
        words: [passcode, pass code]
        next: passcode
    on_exhausted: goodbye
  pin:
    kind: authenticate
    method: pin
    prompt: Enter your PIN, then pound.
    failure_prompt: That did not match our records. You have {attempts_left} attempt left.
    next: main_menu
    on_failure: choose_method
    on_exhausted: goodbye
  passcode:
    kind: authenticate
    method: passcode
    prompt: Please say your passcode.
    next: main_menu
    on_failure: choose_method
    on_exhausted: goodbye
  other_route:
    kind: hangup
    say: We could not verify your identity on this call. Please visit a branch. Goodbye.
  goodbye:
    kind: hangup
    say: We did not receive a response. Goodbye.
"""
_HEAD_COUNT = 7  # the steps above, and main_menu


def _menu(step_id: str, targets: list[tuple[str, str]], back: bool) -> str:
    """A keypad menu: `targets` are (what it is, step) for keys 1..8, 9 goes back."""
    told = " ".join(f"For {what}, press {key}." for key, (what, _) in enumerate(targets, 1))
    lines = [f"  {step_id}:", "    kind: menu", f"    prompt: {told}"]
    if back:
        lines[-1] += " For the main menu, press 9."
    lines.append("    choices:")
    for key, (_, target) in enumerate(targets, 1):
        lines += [f"      - key: {key}", f"        next: {target}"]
    if back:
        lines += ["      - key: 9", "        next: main_menu"]
    lines.append("    on_exhausted: goodbye")
    return "\n".join(lines) + "\n"


def _intent(n: int, dept: int) -> tuple[str, int]:
    """One leaf: a queue at one factor (1 step), or a step-up to two factors (6 steps)."""
    if n % 2 == 0:
        return (
            f"  i{n}_queue:\n    kind: enqueue\n    queue: dept{dept}\n"
            f"    say: Connecting you to an agent for request {n}.\n"
        ), 1
    check, back = f"i{n}_check", f"    next: i{n}_queue\n"
    text = f"""  i{n}_info:
    kind: say
    say: Request {n} needs one more check.
    next: {check}
  {check}:
    kind: menu
    input: dtmf speech
    prompt: >-
      To get a code by text message, press 1 or say text. To have us call you back, press 3
      or say call me. To enter a service code from our website, press 4 or say service code.
    choices:
      - key: 1
        words: [text, text message]
        next: i{n}_sms
      - key: 3
        words: [call me, call back]
        next: i{n}_call
      - key: 4
        words: [service code]
        next: i{n}_svc
    on_exhausted: goodbye
  i{n}_sms:
    kind: authenticate
    method: sms_otp
    prompt: Please enter the code we sent you, then pound. For a new code, press star, pound.
{back}    on_failure: {check}
    on_unavailable: {check}
    on_exhausted: goodbye
  i{n}_call:
    kind: authenticate
    method: callback
    prompt: We will call you back at the phone number on file. Please hang up now. Goodbye.
{back}    on_unavailable: {check}
    on_exhausted: goodbye
  i{n}_svc:
    kind: authenticate
    method: service_code
    prompt: Please enter the service code shown in your online account, then pound.
{back}    on_failure: {check}
    on_exhausted: goodbye
  i{n}_queue:
    kind: enqueue
    queue: secure{dept}
    say: Connecting you to our specialists for request {n}.
"""
    return text, 6


def generate(steps: int) -> str:
    """A flow of about `steps` steps that passes every check cleanly."""
    queues = "queues:\n" + "".join(
        f"  dept{d}:\n    requires: one_factor\n    roles: [agent]\n"
        f"  secure{d}:\n    requires: two_factor\n    roles: [specialist]\n"
        for d in range(DEPARTMENTS)
    )
    body: list[str] = []
    leaves: list[list[tuple[str, str]]] = [[] for _ in range(DEPARTMENTS)]
    count, n = _HEAD_COUNT, 0
    # each leaf also costs about 1/7 of a menu above it
    while count + n // 7 + DEPARTMENTS < steps or n < 2 * DEPARTMENTS:
        dept = (n // 2) % DEPARTMENTS
        text, size = _intent(n, dept)
        body.append(text)
        entry = f"i{n}_queue" if size == 1 else f"i{n}_info"
        leaves[dept].append((f"request {n}", entry))
        count, n = count + size, n + 1
    tops: list[tuple[str, str]] = []
    for dept, level in enumerate(leaves):
        depth = 0
        while len(level) > 8:  # menus of up to eight choices, key 9 goes back
            grouped = []
            for at in range(0, len(level), 8):
                step_id = f"d{dept}_m{depth}_{at // 8}"
                body.append(_menu(step_id, level[at : at + 8], back=True))
                grouped.append((f"more options {at // 8 + 1}", step_id))
                count += 1
            level, depth = grouped, depth + 1
        step_id = f"d{dept}_menu"
        body.append(_menu(step_id, level, back=True))
        tops.append((f"department {dept}", step_id))
        count += 1
    main = _menu("main_menu", tops, back=False)
    return _FIXED + queues + "steps:\n" + _HEAD_STEPS + main + "".join(body)


def _cpu(run: object) -> float:
    start = time.process_time()
    run()  # type: ignore[operator]
    return time.process_time() - start


@click.command()
@click.option("--steps", "sizes", type=int, multiple=True, default=(1000, 10_000))
@click.option("--repeat", type=int, default=3, show_default=True)
@click.option("--profile", is_flag=True, help="Print the top functions of one run by cProfile.")
def main(sizes: tuple[int, ...], repeat: int, profile: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for steps in sizes:
            path = Path(tmp) / f"large_{steps}.yaml"
            path.write_text(generate(steps), encoding="utf-8")
            flow, marks = load_flow_with_marks(path)
            problems = check_flow(flow, marks, str(path))
            assert not problems, problems[:3]
            args = ["flows", "check", str(path)]
            runner = CliRunner()

            def check(args: list[str] = args, runner: CliRunner = runner) -> None:
                result = runner.invoke(cli, args, catch_exceptions=False)
                assert result.exit_code == 0, result.output

            def load(path: Path = path) -> None:
                load_flow_with_marks(path)

            totals = sorted(_cpu(check) for _ in range(repeat))
            loads = sorted(_cpu(load) for _ in range(repeat))
            size = path.stat().st_size
            click.echo(
                f"{len(flow.steps):>6} steps, {size / 1024:7.0f} KiB: `ivr flows check` "
                f"CPU best {totals[0]:.3f} s, median {statistics.median(totals):.3f} s "
                f"(loading best {loads[0]:.3f} s, checks about {totals[0] - loads[0]:.3f} s; "
                f"{repeat} runs)"
            )
            if profile:
                profiler = cProfile.Profile()
                profiler.runcall(check)
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
