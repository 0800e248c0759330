"""`ivr audit`: the audit trail, read back from Redis."""

from __future__ import annotations

import time

import click

from ivr.cli import _redis, cli
from ivr.errors import IvrError


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
