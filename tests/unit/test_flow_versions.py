"""Flow versions: content hashes, safe publish, versions and rollback, the step-level diff, and
the web app serving the live version, with each call kept on the version it started with."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from ivr.cli import cli
from ivr.dev.flow_watcher import FlowWatcher
from ivr.errors import IvrError
from ivr.flows.diff import diff_flows
from ivr.flows.loader import parse_flow
from ivr.flows.publish import PublishRefused, publish_flow
from ivr.store import keys
from ivr.store.flows import FlowVersions, canonical, flow_hash
from tests.conftest import ALICE, FLOWS_DIR, Caller, enrol, make_app
from tests.support import edit, said

DEFAULT = (FLOWS_DIR / "default.yaml").read_text()
METHOD_PROMPT = "For PIN, press 1. For passcode, press 2."
BROKEN = ("        next: pin\n", "        next: nowhere\n")


def variant(tag: str) -> str:
    """The default flow, its method menu saying `tag` first: a caller hears which version."""
    return edit(DEFAULT, METHOD_PROMPT, f"{tag}. {METHOD_PROMPT}")


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    """flows/default.yaml copied alone (no scenario tests beside it), to be edited."""
    path = tmp_path / "flows" / "default.yaml"
    path.parent.mkdir()
    path.write_text(DEFAULT)
    return path


def publish(redis: Any, path: Path, text: str) -> str:
    path.write_text(text)
    return publish_flow(redis, path)[0]


# -- hashing ---------------------------------------------------------------------------------


def test_comments_and_whitespace_are_not_a_new_version() -> None:
    reformatted = "# an admin's note\n\n" + DEFAULT.replace("\n\n", "\n\n\n") + "\n# the end\n"
    reformatted = edit(reformatted, "    next: identify\n", "    next:    identify   # on\n")
    assert flow_hash(parse_flow(reformatted)) == flow_hash(parse_flow(DEFAULT))
    assert flow_hash(parse_flow(variant("Hello"))) != flow_hash(parse_flow(DEFAULT))


# -- publish, versions, rollback -------------------------------------------------------------


def test_publish_refuses_a_flow_failing_its_checks_and_keeps_the_live_version(
    redis: Any, flow_file: Path
) -> None:
    good = publish(redis, flow_file, DEFAULT)
    flow_file.write_text(edit(DEFAULT, *BROKEN))
    with pytest.raises(PublishRefused) as refused:
        publish_flow(redis, flow_file)
    assert any("no step named `nowhere`" in line for line in refused.value.lines)
    assert FlowVersions(redis, "default").live() == good
    assert [v.digest for v in FlowVersions(redis, "default").versions()] == [good]


def test_publish_refuses_a_flow_failing_its_scenario_tests(redis: Any, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(FLOWS_DIR, flows)
    flow = flows / "default.yaml"
    flow.write_text(edit(DEFAULT, "Welcome to Example Bank", "Hello"))
    with pytest.raises(PublishRefused) as refused:
        publish_flow(redis, flow)
    assert "scenario tests failed" in str(refused.value)
    assert any(line.startswith("FAIL") for line in refused.value.lines)
    assert FlowVersions(redis, "default").live() is None


def test_republishing_the_same_model_is_the_same_version(redis: Any, flow_file: Path) -> None:
    first = publish(redis, flow_file, DEFAULT)
    flow_file.write_text("# reworded comment\n" + DEFAULT)
    again, new, _ = publish_flow(redis, flow_file)
    assert (again, new) == (first, False)
    assert len(FlowVersions(redis, "default").versions()) == 1


def test_versions_and_rollback(redis: Any, flow_file: Path) -> None:
    a = publish(redis, flow_file, variant("A"))
    b = publish(redis, flow_file, variant("B"))
    c = publish(redis, flow_file, variant("C"))
    store = FlowVersions(redis, "default")
    assert [(v.digest, v.live) for v in store.versions()] == [(a, False), (b, False), (c, True)]
    assert store.rollback() == b
    assert store.rollback() == a
    with pytest.raises(IvrError, match="no version before"):
        store.rollback()
    assert store.rollback(c[:8]) == c and store.live() == c
    with pytest.raises(IvrError, match="matches no"):
        store.rollback("abcdef0")


def test_a_corrupt_version_is_never_rolled_back_to(redis: Any, flow_file: Path) -> None:
    a = publish(redis, flow_file, variant("A"))
    b = publish(redis, flow_file, variant("B"))
    redis.set(keys.flow_version("default", a), b"{not json")
    with pytest.raises(IvrError, match="does not parse"):
        FlowVersions(redis, "default").rollback()
    assert FlowVersions(redis, "default").live() == b


# -- diff ------------------------------------------------------------------------------------


def test_diff_names_the_steps_and_fields_that_changed() -> None:
    before = parse_flow(DEFAULT)
    text = edit(variant("New"), "    max_digits: 12\n", "    max_digits: 10\n")
    text = edit(text, "        next: passcode\n", "        next: goodbye\n")
    text = edit(text, "\n  welcome:\n", "\n  hello:\n    kind: say\n    say: Hi.\n"
                "    next: welcome\n\n  welcome:\n")  # fmt: skip
    text = edit(text, "start: welcome", "start: hello")
    text = edit(text, "    unattested_requires: two_factor\n", "")
    after = parse_flow(text)
    found = diff_flows(before, after)
    assert found.steps_added == ["hello"] and found.steps_removed == []
    assert found.steps_changed == {
        "identify": ["max_digits"],
        "choose_method": ["prompt", "choices[1].next"],
    }
    assert found.flow_changed == ["start"]
    assert found.queues_changed == {"card-services": ["unattested_requires"]}
    assert diff_flows(before, parse_flow("# note\n" + DEFAULT)).empty


def test_flows_diff_command_between_two_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(DEFAULT)
    b.write_text(edit(DEFAULT, *BROKEN[:1], "        next: passcode\n"))
    result = CliRunner().invoke(cli, ["flows", "diff", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert result.output == "~ step choose_method: choices[0].next\n"


# -- serving ---------------------------------------------------------------------------------


@pytest.fixture
def served(redis: Any, flow_file: Path, outbox_path: Path) -> Flask:
    """An app serving flows/default.yaml as its file, on the Redis versions are published to."""
    app = make_app(redis, outbox=outbox_path, flows_dir=flow_file.parent)
    with app.app_context():
        enrol(app.extensions["ivr"], ALICE)
    return app


def to_method_menu(app: Flask, sid: str) -> tuple[Caller, str]:
    call = Caller(app.test_client(), call_sid=sid)
    call.start()
    return call, said(call.answer(Digits=ALICE.account).data)


SID_1, SID_2 = "CA" + "1" * 32, "CA" + "2" * 32


def test_a_call_keeps_its_version_while_a_new_call_gets_the_published_one(
    redis: Any, served: Flask, flow_file: Path
) -> None:
    publish(redis, flow_file, variant("Version A"))
    first = Caller(served.test_client(), call_sid=SID_1)
    first.start()
    publish(redis, flow_file, variant("Version B"))
    assert said(first.answer(Digits=ALICE.account).data).startswith("Version A.")
    assert said(first.answer(Digits="1").data).startswith("Enter your PIN")
    _, heard = to_method_menu(served, SID_2)
    assert heard.startswith("Version B.")


def test_without_a_published_version_the_file_is_served(served: Flask) -> None:
    _, heard = to_method_menu(served, SID_1)
    assert heard.startswith(METHOD_PROMPT)


@pytest.mark.parametrize("damage", ["garbage", "other_flow", "missing", "fails_checks"])
def test_a_live_version_that_cannot_load_falls_back_to_the_last_good_one(
    redis: Any, served: Flask, flow_file: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    publish(redis, flow_file, variant("Version A"))
    to_method_menu(served, SID_1)  # this process has served A
    bad = "f" * 64
    broken = parse_flow(edit(DEFAULT, *BROKEN))  # as a publish that skipped the checks
    stored = {
        "garbage": b"{not a flow",
        "other_flow": canonical(parse_flow(variant("Other"))),
        "fails_checks": canonical(broken),
    }
    if damage == "fails_checks":
        bad = flow_hash(broken)
    if damage in stored:
        redis.set(keys.flow_version("default", bad), stored[damage])
    redis.set(keys.flow_live("default"), bad)
    caplog.set_level(logging.ERROR, "ivr")
    for sid in (SID_2, "CA" + "3" * 32):
        _, heard = to_method_menu(served, sid)
        assert heard.startswith("Version A.")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and bad[:12] in errors[0].getMessage()


# -- ivr dev ---------------------------------------------------------------------------------


def test_dev_watcher_publishes_an_edit_and_keeps_the_last_good_version(
    redis: Any, flow_file: Path
) -> None:
    lines: list[str] = []
    watcher = FlowWatcher(redis, flow_file, lines.append, every=0)
    watcher.publish()
    good = FlowVersions(redis, "default").live()
    assert good is not None and lines == [f"flow default: published {good[:12]}"]
    flow_file.write_text(edit(DEFAULT, *BROKEN))
    os.utime(flow_file, ns=(10**18, 10**18))  # mtimes written within a test can tie
    watcher.check()
    assert lines[1].startswith("flow default: not published")
    assert "no step named `nowhere`" in lines[2]
    assert FlowVersions(redis, "default").live() == good
    flow_file.write_text(variant("Edited"))
    os.utime(flow_file, ns=(2 * 10**18, 2 * 10**18))
    watcher.check()
    live = FlowVersions(redis, "default").live()
    assert live != good and lines[-1] == f"flow default: published {live[:12]}"
