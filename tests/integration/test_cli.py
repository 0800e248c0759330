"""The `ivr` command as an admin and a developer use it, against a real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from ivr.cli import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner(redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no stray .env or .ivr/ from the developer's checkout
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("IVR_FLOWS_DIR", str(ROOT / "flows"))
    monkeypatch.setenv("IVR_ARGON2_MEMORY_KIB", "1024")
    monkeypatch.setenv("IVR_ARGON2_TIME_COST", "1")
    return CliRunner()


class TestCustomers:
    def test_add_stores_only_hashes(self, runner: CliRunner, redis_url: str) -> None:
        result = runner.invoke(
            cli,
            [
                "customers",
                "add",
                "12345678",
                "--phone",
                "+14155550100",
                "--pin",
                "583920",
                "--passcode",
                "purple elephant 42",
                "--name",
                "Ada Lovelace",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "added 12345678 with pin and passcode" in result.output
        stored = redis.Redis.from_url(redis_url).hgetall("ivr:customer:12345678")
        assert stored[b"pin_hash"].startswith(b"$argon2id$")
        assert b"583920" not in b"".join(stored.values())
        assert b"elephant" not in b"".join(stored.values())

    def test_weak_pin_is_refused_in_one_line(self, runner: CliRunner, redis_url: str) -> None:
        result = runner.invoke(
            cli, ["customers", "add", "12345678", "--phone", "+14155550100", "--pin", "123456"]
        )
        assert result.exit_code == 1
        assert result.output.startswith("Error: ")
        assert len(result.output.strip().splitlines()) == 1
        assert "Traceback" not in result.output
        assert not redis.Redis.from_url(redis_url).exists("ivr:customer:12345678")

    def test_bad_phone_is_refused(self, runner: CliRunner) -> None:
        result = runner.invoke(cli, ["customers", "add", "12345678", "--phone", "4155550100"])
        assert result.exit_code == 1
        assert "E.164" in result.output

    def test_hidden_pin_prompt(self, runner: CliRunner) -> None:
        result = runner.invoke(
            cli,
            ["customers", "add", "12345678", "--phone", "+14155550100", "--pin", "-"],
            input="583920\n583920\n",
        )
        assert result.exit_code == 0, result.output
        assert "583920" not in result.output

    def test_show_set_reset_remove(self, runner: CliRunner, redis_url: str) -> None:
        runner.invoke(
            cli,
            [
                "customers",
                "add",
                "12345678",
                "--phone",
                "+14155550100",
                "--pin",
                "583920",
                "--address",
                "12 Analytical Row",
            ],
        )
        client = redis.Redis.from_url(redis_url)
        client.set("ivr:failures:12345678:pin", 7)
        client.set("ivr:failures:12345678:service_code", 10)  # a locked possession factor

        shown = runner.invoke(cli, ["customers", "show", "12345678"]).output
        assert "pin          set, 7 consecutive failures" in shown
        assert "passcode     not set" in shown
        assert "service_code 10 consecutive failures" in shown
        assert "$argon2" not in shown

        changed = runner.invoke(cli, ["customers", "set", "12345678", "--phone", "+14155550111"])
        assert changed.exit_code == 0
        assert client.smembers("ivr:phone:+14155550111") == {b"12345678"}
        assert not client.smembers("ivr:phone:+14155550100")

        assert runner.invoke(cli, ["customers", "reset", "12345678"]).exit_code == 0
        assert client.get("ivr:failures:12345678:pin") is None
        assert client.get("ivr:failures:12345678:service_code") is None
        client.set("ivr:failures:12345678:sms_otp", 10)
        one = runner.invoke(cli, ["customers", "reset", "12345678", "--method", "sms_otp"])
        assert one.exit_code == 0, one.output
        assert client.get("ivr:failures:12345678:sms_otp") is None

        assert runner.invoke(cli, ["customers", "remove", "12345678"]).exit_code == 0
        missing = runner.invoke(cli, ["customers", "show", "12345678"])
        assert missing.exit_code == 1
        assert "no customer with account number 12345678" in missing.output

    def test_unreachable_redis_is_one_clear_line(
        self, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
        result = runner.invoke(cli, ["customers", "show", "12345678"])
        assert result.exit_code == 1
        assert "cannot reach Redis" in result.output
        assert "Traceback" not in result.output

    def test_bad_setting_names_the_variable(
        self, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("IVR_PIN_MIN_LENGTH", "three")
        result = runner.invoke(
            cli, ["customers", "add", "12345678", "--phone", "+14155550100", "--pin", "583920"]
        )
        assert result.exit_code == 1
        assert result.output.startswith("Error: IVR_PIN_MIN_LENGTH:")


class TestFlowsCheck:
    def test_shipped_flows_pass(self, runner: CliRunner) -> None:
        result = runner.invoke(cli, ["flows", "check", str(ROOT / "flows")])
        assert result.exit_code == 0, result.output
        assert "ok  " in result.output

    def test_unauthenticated_path_to_a_queue_fails_naming_line_and_path(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        text = (ROOT / "flows" / "default.yaml").read_text()
        # a careless edit: the PIN's failure path now leads to the intent menu
        text = text.replace(
            "    next: main_menu\n    on_failure: choose_method",
            "    next: main_menu\n    on_failure: main_menu",
            1,
        )
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        result = runner.invoke(cli, ["flows", "check", str(bad)])
        assert result.exit_code == 1
        line = next(i for i, t in enumerate(text.splitlines(), 1) if "queue: balances" in t)
        assert f"{bad}:{line}:" in result.output
        assert "pin -(on_failure)-> main_menu" in result.output

    def test_prompt_with_customer_field_fails(self, runner: CliRunner, tmp_path: Path) -> None:
        text = (ROOT / "flows" / "default.yaml").read_text()
        text = text.replace("Thank you, you are verified.", "Welcome back, {customer.name}.")
        bad = tmp_path / "personal.yaml"
        bad.write_text(text)
        result = runner.invoke(cli, ["flows", "check", str(bad)])
        assert result.exit_code == 1
        line = next(i for i, t in enumerate(text.splitlines(), 1) if "{customer.name}" in t)
        # the error points at the `prompt:` key of that step, at or just above the text
        reported = int(result.output.split(f"{bad}:", 1)[1].split(":", 1)[0])
        assert line - 3 <= reported <= line
        assert "{customer.name}" in result.output

    def test_malformed_yaml_names_file_line_column(self, runner: CliRunner, tmp_path: Path) -> None:
        bad = tmp_path / "broken.yaml"
        bad.write_text("name: broken\nstart: [oops\n")
        result = runner.invoke(cli, ["flows", "check", str(bad)])
        assert result.exit_code == 1
        assert f"{bad}:3:1: invalid YAML" in result.output or f"{bad}:2:" in result.output


class TestCall:
    def test_in_process_call_reaches_the_queue(self, runner: CliRunner, redis_url: str) -> None:
        runner.invoke(
            cli, ["customers", "add", "12345678", "--phone", "+14155550100", "--pin", "583920"]
        )
        result = runner.invoke(
            cli, ["call", "--in-process", "-i", "12345678#", "-i", "1", "-i", "583920#", "-i", "0"]
        )
        assert result.exit_code == 0, result.output
        assert "IVR: Enter your PIN" in result.output
        assert "-> enqueued in queue 'general'" in result.output

    def test_no_running_dev_service_is_one_clear_line(self, runner: CliRunner) -> None:
        result = runner.invoke(cli, ["call", "-i", "1"])
        assert result.exit_code == 1
        assert "no running `ivr dev` found" in result.output


def test_ivr_dev_starts_everything_and_a_call_plays(tmp_path: Path) -> None:
    """The README's first command, minus the install: a newcomer's first call."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TWILIO_AUTH_TOKEN")}
    env["IVR_FLOWS_DIR"] = str(ROOT / "flows")
    ivr = [sys.executable, "-c", "from ivr.cli import main; main()"]
    port = _free_port()
    dev = subprocess.Popen(
        [*ivr, "dev", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        state_file = tmp_path / ".ivr" / "dev.json"
        deadline = time.monotonic() + 30
        while not state_file.exists():
            assert dev.poll() is None, dev.stdout.read() if dev.stdout else ""
            assert time.monotonic() < deadline, "ivr dev did not come up in 30 s"
            time.sleep(0.2)
        state = json.loads(state_file.read_text())
        assert state["base_url"] == f"http://127.0.0.1:{port}"
        # PIN, then a card change: stepped up with a text message the dev worker really sends
        played = subprocess.run(
            [
                *ivr,
                "call",
                "-i",
                "12345678#",
                "-i",
                "1",
                "-i",
                "583920#",
                "-i",
                "2",
                "-i",
                "1",
                "-i",
                "code#",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert played.returncode == 0, played.stdout + played.stderr
        assert "-> enqueued in queue 'card-services'" in played.stdout
    finally:
        dev.send_signal(signal.SIGINT)
        output, _ = dev.communicate(timeout=30)
    assert "Demo customers" in output
    assert not (tmp_path / ".ivr" / "dev.json").exists()


def _free_port() -> int:
    from ivr.store.server import find_free_port

    return find_free_port()


class TestServe:
    def test_without_redis_url_is_one_line(
        self, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("REDIS_URL")
        result = runner.invoke(cli, ["serve"])
        assert result.exit_code == 1
        assert result.output.startswith("Error: REDIS_URL: not set")

    def test_without_auth_token_refuses_to_start(
        self, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
        result = runner.invoke(cli, ["serve"])
        assert result.exit_code == 1
        assert "TWILIO_AUTH_TOKEN: not set" in result.output

    def test_bad_flow_stops_start_up(
        self, runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        (tmp_path / "default.yaml").write_text("name: default\nstart: nowhere\n")
        monkeypatch.setenv("IVR_FLOWS_DIR", str(tmp_path))
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", "x")
        result = runner.invoke(cli, ["serve"])
        assert result.exit_code == 1
        assert f"{tmp_path / 'default.yaml'}:" in result.output
        assert "missing required key `authentication`" in result.output


class TestServeChecksDelivery:
    def test_undeliverable_method_stops_start_up(
        self, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", "x")
        monkeypatch.delenv("IVR_CODE_KEY", raising=False)
        result = runner.invoke(cli, ["serve"])
        assert result.exit_code == 1
        # Listed with every other start-up problem, one line each (issue 9).
        assert any(
            line.startswith("Error: IVR_CODE_KEY: not set") for line in result.output.splitlines()
        )
        assert "Traceback" not in result.output
