"""What the benchmark prints: the machine and settings it ran with, then the numbers."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench import kinds
from bench.calls import RunResult
from bench.plans import FLOW_NAME, MIX, CallPlan
from ivr.settings import Settings
from ivr.simulator import Sent

TWILIO_BUDGET_S = 15.0
FAILURES_SHOWN = 5


def header(
    plans: Sequence[CallPlan],
    concurrency: int,
    web_workers: int,
    settings: Settings,
    redis_version: str,
) -> list[str]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 0
    texts = sum(plan.texts for plan in plans)
    return [
        "secure-ivr webhook benchmark (SECURITY.md item 4)",
        f"python      {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        f"platform    {platform.platform()}; machine {platform.machine()}; "
        f"cpu {cpu_model() or platform.processor() or '?'}",
        f"cpus        os.cpu_count()={os.cpu_count()}, usable by this process={affinity}",
        f"servers     gunicorn {package_version('gunicorn')} --workers {web_workers} "
        f"(sync) on 127.0.0.1; 1 rq {package_version('rq')} worker --with-scheduler; "
        f"redis-server {redis_version} (private, no persistence)",
        f"argon2id    time_cost={settings.argon2_time_cost} "
        f"memory={settings.argon2_memory_kib} KiB parallelism=1 "
        f"pepper={'yes' if settings.pepper else 'no'}",
        f"customers   {len(plans)}, one per call: its own account, phone on file and calling "
        f"number",
        f"send caps   {settings.send_limit_account} per account, "
        f"{settings.send_limit_destination} per destination, {settings.send_limit_prefix} per "
        f"country prefix in {settings.send_window} s; {texts} texts, one per SMS customer",
        f"load        {len(plans)} calls from {concurrency} threads; mix: "
        + ", ".join(make(0).label for make in MIX)
        + f" (flow {FLOW_NAME}); callers on hold really wait out each <Pause>",
    ]


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (the value at rank ceil(pct% * n))."""
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil without floats going astray
    return sorted_values[int(rank) - 1]


def spread(seconds: Sequence[float]) -> str:
    """p50/p90/p99/max of durations, in seconds."""
    values = sorted(seconds)
    return "p50 {:.2f} s, p90 {:.2f} s, p99 {:.2f} s, max {:.2f} s".format(
        *(percentile(values, pct) for pct in (50, 90, 99)), values[-1]
    )


def report(run: RunResult, concurrency: int, steps: dict[str, str]) -> tuple[list[str], bool]:
    """The table and summary lines, and whether every request kind's p99 is under budget."""
    by_kind: dict[str, list[Sent]] = {}
    for sent in run.sent:
        by_kind.setdefault(kinds.kind_of(sent, steps), []).append(sent)
    rows = [(kind, by_kind[kind]) for kind in kinds.ORDER if kind in by_kind]

    lines = [
        f"{'request kind':<18}{'count':>7}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}"
        f"{'max ms':>10}{'non-2xx':>9}",
        "-" * 74,
    ]
    worst_p99, worst_kind = 0.0, "-"
    for kind, sent in [*rows, ("overall", run.sent)]:
        if not sent:
            continue
        if kind == "overall":
            lines.append("-" * 74)
        ms = sorted(s.elapsed * 1000 for s in sent)
        p99 = percentile(ms, 99)
        if kind != "overall" and p99 > worst_p99:
            worst_p99, worst_kind = p99, kind
        bad = sum(1 for s in sent if s.reply.status not in (200, 204))
        lines.append(
            f"{kind:<18}{len(ms):>7}{percentile(ms, 50):>10.1f}{percentile(ms, 90):>10.1f}"
            f"{p99:>10.1f}{ms[-1]:>10.1f}{bad:>9}"
        )

    total = len(run.sent)
    lines.append("")
    lines.append(
        f"{run.played} calls ({total} webhook requests) in {run.wall_seconds:.2f} s with "
        f"{concurrency} threads: {run.played / run.wall_seconds:.2f} calls/s, "
        f"{total / run.wall_seconds:.1f} requests/s (SMS callers on hold included)"
        if run.wall_seconds > 0
        else f"{run.played} calls"
    )
    if run.skipped:
        lines.append(f"{run.skipped} calls skipped: --max-seconds ran out or interrupted")
    if run.failures:
        lines.append(f"{len(run.failures)} calls did NOT end as scripted, e.g.:")
        for failure in run.failures[:FAILURES_SHOWN]:
            heard = failure.result.heard if failure.result else []
            last = heard[-1] if heard else "(nothing)"
            lines.append(
                f"  call #{failure.index} ({failure.plan.label}): {failure.problem}; "
                f"last heard {last!r}"
            )
    else:
        lines.append(f"all {run.played} calls ended as scripted (queue or failure route)")

    if run.holds:
        lines.append(
            f"sms hold, choice sent -> code prompt ({len(run.holds)} calls): "
            f"{spread([h.hold for h in run.holds])}"
        )
        lines.append(
            f"sms delivery, choice sent -> text in the outbox: "
            f"{spread([h.delivery for h in run.holds])} (the hold is this rounded up to a "
            f"whole number of <Pause>s between polls)"
        )

    worst_max = max((s.elapsed for s in run.sent), default=0.0) * 1000
    budget_ms = TWILIO_BUDGET_S * 1000
    within = bool(run.sent) and worst_p99 < budget_ms
    lines.append(
        f"Twilio budget {TWILIO_BUDGET_S:g} s: every request kind's p99 is "
        f"{'UNDER' if within else 'NOT under'} it -- worst p99 {worst_p99:.1f} ms "
        f"({worst_kind}) = {worst_p99 / budget_ms:.2%} of the budget; "
        f"slowest single request {worst_max:.1f} ms = {worst_max / budget_ms:.2%}"
    )
    return lines, within
