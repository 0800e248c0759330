"""The realistic mode's numbers, from each step's raw record (bench.ramp), and what is printed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench import kinds
from bench.loopback import Timed
from bench.ramp import Cpu, Ended, StepResult
from bench.report import percentile

ARGON2_KINDS = (kinds.PIN, kinds.PASSCODE)  # one argon2 verification each, right or wrong

# The targets on the 2-core machine.
TARGET_CALLS = 2500
TARGET_WORKER_MS_PER_TEXT = 20.0
TARGET_HOLD_P99_S = 4.0
TARGET_SMS_PER_S = 5.0
TARGET_WEB_MS_PER_WEBHOOK = 1.2


@dataclass(frozen=True)
class KindRow:
    kind: str
    count: int
    p50_ms: float
    p99_ms: float
    bad: int  # not 200/204, or no answer


@dataclass(frozen=True)
class Summary:
    lines: int
    live_mean: float
    live_min: int
    rows: list[KindRow]
    calls: int
    failed: int
    problems: list[str]
    webhooks_per_s: float
    sms_per_s: float
    hold_p50: float | None
    hold_p99: float | None
    delivery_p99: float | None
    web_ms_per_webhook: float
    web_ms_per_call: float
    web_ms_non_argon2: float
    worker_ms_per_text: float | None
    redis_ms_per_webhook: float
    generator_cores: float
    generator_ms_per_webhook: float
    redis_bytes_per_live: float | None
    redis_bytes_per_ended: float | None
    service_cores_per_1000_live: float  # web + worker + redis CPU in the steady window
    held: bool
    why_not: str | None


def summarise(step: StepResult, idle: Cpu, argon2_seconds: float, p99_limit_ms: float) -> Summary:
    """`idle`: the services' CPU per second with no calls, left out of the CPU figures."""
    window = step.in_window()
    seconds = step.window[1] - step.window[0]
    rows = _rows(window)
    lives = [s.live for s in step.samples] or [0]
    all_requests = len(step.requests) or 1
    argon2 = sum(1 for t in step.requests if t.kind in ARGON2_KINDS)
    holds = [
        c.hold
        for c in step.calls
        if c.hold is not None
        and c.chose_at is not None
        and step.window[0] <= c.chose_at
        and c.chose_at < step.window[1]
    ]
    failed = [c for c in step.calls if c.problem is not None]
    ended = len(step.calls)
    per_ended, per_live = _redis_bytes(step)
    gen, spent = step.cpu_window, step.cpu_step
    cpu = Cpu(
        spent.at,
        max(0.0, spent.web - idle.web * spent.at),
        max(0.0, spent.worker - idle.worker * spent.at),
        max(0.0, spent.redis - idle.redis * spent.at),
        spent.generator,
    )
    why_not = _why_not(step, rows, failed, p99_limit_ms, window)
    return Summary(
        lines=step.pacing.lines,
        live_mean=sum(lives) / len(lives),
        live_min=min(lives),
        rows=rows,
        calls=ended,
        failed=len(failed),
        problems=[f"{c.plan.label}: {c.problem}" for c in failed[:3]],
        webhooks_per_s=len(window) / seconds if seconds > 0 else 0.0,
        sms_per_s=sum(1 for t in window if t.kind == kinds.CODE_REQUEST) / seconds
        if seconds > 0
        else 0.0,
        hold_p50=_pct([h.hold for h in holds], 50),
        hold_p99=_pct([h.hold for h in holds], 99),
        delivery_p99=_pct([h.delivery for h in holds], 99),
        web_ms_per_webhook=cpu.web * 1000 / all_requests,
        web_ms_per_call=cpu.web * 1000 / max(1, ended),
        web_ms_non_argon2=(cpu.web - argon2 * argon2_seconds) * 1000 / all_requests,
        worker_ms_per_text=cpu.worker * 1000 / step.texts if step.texts else None,
        redis_ms_per_webhook=cpu.redis * 1000 / all_requests,
        generator_cores=gen.generator / gen.at if gen.at > 0 else 0.0,
        generator_ms_per_webhook=gen.generator * 1000 / max(1, len(window)),
        redis_bytes_per_live=per_live,
        redis_bytes_per_ended=per_ended,
        service_cores_per_1000_live=_cores_per_1000(gen, sum(lives) / len(lives)),
        held=why_not is None,
        why_not=why_not,
    )


def _cores_per_1000(window: Cpu, live: float) -> float:
    if window.at <= 0 or live <= 0:
        return 0.0
    return (window.web + window.worker + window.redis) / window.at / live * 1000


def cpu_bound(summary: Summary, cores: int) -> float | None:
    """Live calls `cores` would hold if the services' CPU were the only limit (no generator)."""
    per_call = summary.service_cores_per_1000_live / 1000
    return cores / per_call if per_call > 0 else None


def _rows(window: Sequence[Timed]) -> list[KindRow]:
    by_kind: dict[str, list[Timed]] = {}
    for timed in window:
        by_kind.setdefault(timed.kind, []).append(timed)
    rows = []
    for kind in kinds.ORDER:
        if kind in by_kind:
            ms = sorted(t.elapsed * 1000 for t in by_kind[kind])
            bad = sum(1 for t in by_kind[kind] if t.status not in (200, 204))
            rows.append(KindRow(kind, len(ms), percentile(ms, 50), percentile(ms, 99), bad))
    return rows


def _pct(values: list[float], pct: float) -> float | None:
    return percentile(sorted(values), pct) if values else None


def _redis_bytes(step: StepResult) -> tuple[float | None, float | None]:
    """(bytes kept per ended call, bytes per live call). What an ended call leaves (audit
    events, counters, finished jobs) is the memory after the step over the calls it played;
    a live call's share is each steady-window sample's growth less that, over the live calls."""
    if not step.calls or step.unfinished:
        return None, None
    per_ended = (step.memory_after - step.memory_before) / len(step.calls)
    shares = [
        (s.used_memory - step.memory_before - per_ended * s.ended) / s.live
        for s in step.samples
        if s.live > 0
    ]
    return per_ended, (sum(shares) / len(shares) if shares else None)


def _why_not(
    step: StepResult,
    rows: list[KindRow],
    failed: list[Ended],
    limit_ms: float,
    window: Sequence[Timed],
) -> str | None:
    if not window:
        return "no webhook answered in the steady window"
    if failed:
        return f"{len(failed)} calls did not end as scripted"
    if step.starved:
        return f"{step.starved} callers ran out of enrolled customers (a benchmark bug)"
    if step.unfinished:
        return f"{step.unfinished} calls still going after the drain"
    bad = [row for row in rows if row.bad]
    if bad:
        return f"{sum(r.bad for r in bad)} webhook answers not 200/204 ({bad[0].kind})"
    worst = max(rows, key=lambda row: row.p99_ms)
    if worst.p99_ms > limit_ms:
        return f"p99 of {worst.kind} {worst.p99_ms:.0f} ms > {limit_ms:g} ms"
    return None


def _ms(value: float | None, unit: str = "ms") -> str:
    return "-" if value is None else f"{value:.2f} {unit}"


def step_lines(number: int, total: int, s: Summary, ramp: float, steady: float) -> list[str]:
    lines = [
        f"step {number}/{total}: {s.lines} callers (live calls in the steady window: mean "
        f"{s.live_mean:.0f}, min {s.live_min}); ramp {ramp:g} s, steady {steady:g} s",
        f"  {'request kind':<18}{'count':>8}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>9}",
    ]
    lines += [
        f"  {r.kind:<18}{r.count:>8}{r.p50_ms:>10.1f}{r.p99_ms:>10.1f}{r.bad:>9}" for r in s.rows
    ]
    hold = (
        f"hold p50 {_ms(s.hold_p50, 's')}, p99 {_ms(s.hold_p99, 's')} "
        f"(text in the outbox p99 {_ms(s.delivery_p99, 's')})"
    )
    lines += [
        f"  calls {s.calls} ended, {s.failed} not as scripted; {s.webhooks_per_s:.1f} "
        f"webhooks/s; SMS step-ups {s.sms_per_s:.2f}/s, {hold}",
        f"  web CPU {s.web_ms_per_webhook:.2f} ms/webhook (non-argon2 "
        f"{s.web_ms_non_argon2:.2f} ms), {s.web_ms_per_call:.1f} ms/call; worker CPU "
        f"{_ms(s.worker_ms_per_text)}/text; redis CPU {s.redis_ms_per_webhook:.3f} ms/webhook",
        f"  redis memory {_bytes(s.redis_bytes_per_live)} per live call "
        f"({_bytes(s.redis_bytes_per_ended)} kept per ended call); load generator "
        f"{s.generator_cores:.2f} of a core ({s.generator_ms_per_webhook:.2f} ms/webhook)",
        f"  services' CPU {s.service_cores_per_1000_live:.2f} cores per 1,000 live calls "
        "(web + worker + redis, steady window)",
        *(f"  e.g. {problem}" for problem in s.problems),
        f"  {'HELD' if s.held else 'NOT HELD: ' + str(s.why_not)}",
    ]
    return lines


def _bytes(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} B"


def summary_lines(steps: list[Summary], p99_limit_ms: float, cores: int) -> list[str]:
    held = [s for s in steps if s.held]
    best = max(held, key=lambda s: s.lines) if held else None
    lines = [""]
    if best is None:
        lines.append(f"held: no step (first: {steps[0].why_not})" if steps else "held: no step")
    else:
        failed = next((s for s in steps if not s.held), None)
        after = f"; {failed.lines} did not: {failed.why_not}" if failed else ""
        lines.append(
            f"held: {best.lines} concurrent live calls with every webhook kind's p99 <= "
            f"{p99_limit_ms:g} ms and every call as scripted{after}"
        )
    if steps:
        last = steps[-1]
        bound = cpu_bound(last, cores)
        if bound is not None:
            lines.append(
                f"by CPU alone ({last.lines} callers' step, the load generator left out), "
                f"{cores} cores would hold about {bound:,.0f} live calls: a ceiling that does "
                "not depend on what else the machine runs"
            )
    sms_step = next((s for s in steps if s.sms_per_s >= TARGET_SMS_PER_S), None)
    lines.append("targets (issue 9; CPU figures at the largest step that held):")
    lines.append(
        _target(
            f"concurrent realistic calls >= {TARGET_CALLS}",
            f"{best.lines if best else 0}",
            best is not None and best.lines >= TARGET_CALLS,
        )
    )
    if best is not None:
        worker = best.worker_ms_per_text
        lines.append(
            _target(
                f"worker CPU <= {TARGET_WORKER_MS_PER_TEXT:g} ms per text",
                _ms(worker),
                worker is not None and worker <= TARGET_WORKER_MS_PER_TEXT,
            )
        )
        lines.append(
            _target(
                f"non-argon2 web CPU <= {TARGET_WEB_MS_PER_WEBHOOK:g} ms per webhook",
                _ms(best.web_ms_non_argon2),
                best.web_ms_non_argon2 <= TARGET_WEB_MS_PER_WEBHOOK,
            )
        )
    if sms_step is None:
        top = max((s.sms_per_s for s in steps), default=0.0)
        lines.append(
            f"  hold p99 <= {TARGET_HOLD_P99_S:g} s at {TARGET_SMS_PER_S:g} SMS step-ups/s: "
            f"not reached (at most {top:.2f}/s)"
        )
    else:
        p99 = sms_step.hold_p99
        lines.append(
            _target(
                f"hold p99 <= {TARGET_HOLD_P99_S:g} s at {TARGET_SMS_PER_S:g} SMS step-ups/s",
                f"{_ms(p99, 's')} at {sms_step.sms_per_s:.2f}/s ({sms_step.lines} callers)",
                p99 is not None and p99 <= TARGET_HOLD_P99_S,
            )
        )
    return lines


def _target(what: str, measured: str, met: bool) -> str:
    return f"  {what:<52} {measured:<32} {'met' if met else 'NOT met'}"
