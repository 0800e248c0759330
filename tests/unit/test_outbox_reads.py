"""The development outbox read as it grows: a reader that keeps its offset sees each message
once, and a line still being written only once it is whole."""

from __future__ import annotations

from pathlib import Path

from ivr.outbox import Outbox, OutboxMessage


def test_a_reader_from_its_offset_sees_only_what_came_since(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.jsonl")
    assert outbox.read_from(0) == ([], 0)
    outbox.append(OutboxMessage("sms", "+15005550006", "code 123456"))
    first, offset = outbox.read_from(0)
    outbox.append(OutboxMessage("email", "ada@example.com", "code 654321", subject="Code"))
    second, end = outbox.read_from(offset)
    assert [m.body for m in first] == ["code 123456"]
    assert [m.body for m in second] == ["code 654321"]
    assert outbox.read_from(end) == ([], end)
    assert outbox.messages() == first + second


def test_a_torn_line_waits_and_a_foreign_one_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    path.write_text('not json\n{"channel": "sms", "to": "+1", "bo')
    messages, offset = Outbox(path).read_from(0)
    assert messages == [] and offset == len("not json\n")
    with path.open("a") as out:
        out.write('dy": "code 111111"}\n')
    assert [m.body for m in Outbox(path).read_from(offset)[0]] == ["code 111111"]
