"""Settings come from the environment (and `.env`), are typed, and fail fast naming the variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ivr.app import create_app
from ivr.errors import FlowDefinitionError, SettingsError
from ivr.settings import ENV_NAMES, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLOW = (REPO_ROOT / "flows" / "default.yaml").read_text(encoding="utf-8")
TEST_CONFIG: dict[str, Any] = {
    "twilio_auth_token": "unit-test-auth-token",
    "argon2_memory_kib": 1024,
    "argon2_time_cost": 1,
    "pepper": "unit-test-pepper-0123",
    "code_key": "unit-test-code-key-0123",
}


pytestmark = pytest.mark.usefixtures("clean_env")


def settings_error(**env: str) -> str:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        with pytest.raises(SettingsError) as caught:
            load_settings()
    return str(caught.value)


class TestDefaults:
    def test_defaults(self) -> None:
        settings = load_settings()
        assert settings.redis_url is None
        assert settings.twilio_auth_token is None
        assert (settings.flows_dir / "default.yaml").is_file()  # ./flows, else the shipped ones
        assert settings.flow == "default"
        assert settings.pepper is None
        assert settings.public_url is None
        assert settings.proxy_hops == 0
        assert settings.session_ttl == 3600
        assert settings.pin_min_length == 6
        assert settings.account_max_failures == 10
        assert settings.argon2_memory_kib == 19456
        assert settings.argon2_time_cost == 2
        assert settings.apology.startswith("We are sorry")

    def test_every_variable_is_documented_in_the_readme(self) -> None:
        readme = (REPO_ROOT / "README.md").read_text()
        missing = [name for name in ENV_NAMES.values() if f"`{name}`" not in readme]
        assert missing == []

    def test_settings_are_frozen(self) -> None:
        settings = load_settings()
        with pytest.raises(ValidationError):
            settings.proxy_hops = 3  # type: ignore[misc]


class TestEnvironment:
    def test_variables_are_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        env = {
            "REDIS_URL": "redis://cache.internal:6380/2",
            "TWILIO_AUTH_TOKEN": "tok-from-env",
            "IVR_FLOWS_DIR": "/srv/flows",
            "IVR_FLOW": "after-hours",
            "IVR_PEPPER": "a-pepper-of-sixteen-plus",
            "IVR_PUBLIC_URL": "https://ivr.example.com/",
            "IVR_PROXY_HOPS": "2",
            "IVR_SESSION_TTL": "900",
            "IVR_PIN_MIN_LENGTH": "8",
            "IVR_ACCOUNT_MAX_FAILURES": "5",
            "IVR_ARGON2_MEMORY_KIB": "65536",
            "IVR_ARGON2_TIME_COST": "3",
            "IVR_APOLOGY": "Sorry, try later.",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = load_settings()
        assert settings.redis_url == "redis://cache.internal:6380/2"
        assert settings.twilio_auth_token == "tok-from-env"
        assert settings.flows_dir == Path("/srv/flows")
        assert settings.flow == "after-hours"
        assert settings.pepper == "a-pepper-of-sixteen-plus"
        assert settings.public_url == "https://ivr.example.com"  # trailing slash dropped
        assert settings.proxy_hops == 2
        assert settings.session_ttl == 900
        assert settings.pin_min_length == 8
        assert settings.account_max_failures == 5
        assert settings.argon2_memory_kib == 65536
        assert settings.argon2_time_cost == 3
        assert settings.apology == "Sorry, try later."

    def test_overrides_win_over_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("IVR_PROXY_HOPS", "2")
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", "from-env")
        settings = load_settings(proxy_hops=1, twilio_auth_token=None)
        assert settings.proxy_hops == 1
        assert settings.twilio_auth_token is None

    @pytest.mark.parametrize("value", ["abc", "6", "-1", "1.5", ""])
    def test_bad_proxy_hops(self, value: str) -> None:
        message = settings_error(IVR_PROXY_HOPS=value)
        assert message.startswith("IVR_PROXY_HOPS: ")

    def test_bad_value_is_shown_for_plain_settings(self) -> None:
        assert "'abc'" in settings_error(IVR_PROXY_HOPS="abc")

    @pytest.mark.parametrize("value", ["101", "0", "-3", "ten"])
    def test_bad_account_max_failures(self, value: str) -> None:
        assert settings_error(IVR_ACCOUNT_MAX_FAILURES=value).startswith(
            "IVR_ACCOUNT_MAX_FAILURES: "
        )

    def test_account_max_failures_bounds(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for good in ("1", "100"):
            monkeypatch.setenv("IVR_ACCOUNT_MAX_FAILURES", good)
            assert load_settings().account_max_failures == int(good)

    @pytest.mark.parametrize(
        "value",
        [
            "https://ivr.example.com/voice",
            "https://ivr.example.com/ivr/",
            "https://ivr.example.com?x=1",
            "https://ivr.example.com#frag",
            "ftp://ivr.example.com",
            "ivr.example.com",
            "https://",
        ],
    )
    def test_public_url_must_be_scheme_and_host(self, value: str) -> None:
        assert settings_error(IVR_PUBLIC_URL=value).startswith("IVR_PUBLIC_URL: ")

    @pytest.mark.parametrize(
        "value", ["http://localhost:8080", "https://ivr.example.com", "https://ivr.example.com/"]
    )
    def test_good_public_urls(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        monkeypatch.setenv("IVR_PUBLIC_URL", value)
        assert load_settings().public_url == value.rstrip("/")

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("IVR_SESSION_TTL", "299"),
            ("IVR_SESSION_TTL", "86401"),
            ("IVR_PIN_MIN_LENGTH", "3"),
            ("IVR_PIN_MIN_LENGTH", "13"),
            ("IVR_ARGON2_MEMORY_KIB", "1023"),
            ("IVR_ARGON2_TIME_COST", "0"),
            ("IVR_FLOW", "../etc/passwd"),
            ("IVR_FLOW", "Default"),
            ("IVR_FLOW", ""),
        ],
    )
    def test_other_bounds(self, name: str, value: str) -> None:
        assert settings_error(**{name: value}).startswith(f"{name}: ")

    @pytest.mark.parametrize("value", ["short-secret", "x" * 15, "p\u00e9pper"])
    def test_short_pepper_is_not_echoed(self, value: str) -> None:
        message = settings_error(IVR_PEPPER=value)
        assert message.startswith("IVR_PEPPER: ")
        assert value not in message
        assert repr(value) not in message

    def test_empty_pepper_is_refused(self) -> None:
        message = settings_error(IVR_PEPPER="")
        assert message.startswith("IVR_PEPPER: ")

    def test_short_pepper_override_is_not_echoed(self) -> None:
        with pytest.raises(SettingsError) as caught:
            load_settings(pepper="tiny-pepper")
        assert str(caught.value).startswith("IVR_PEPPER: ")
        assert "tiny-pepper" not in str(caught.value)

    def test_error_is_not_chained_to_the_validation_error(self) -> None:
        # The pydantic error would carry the input value into tracebacks and error reports.
        with pytest.raises(SettingsError) as caught:
            load_settings(pepper="tiny-pepper")
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__


class TestDotEnv:
    def test_dotenv_in_the_cwd_is_honoured(self, clean_env: Path) -> None:
        (clean_env / ".env").write_text(
            "IVR_PROXY_HOPS=3\nREDIS_URL=redis://from-dotenv:6379/0\n"
            "IVR_PEPPER=pepper-from-dotenv-file\n",
            encoding="utf-8",
        )
        settings = load_settings()
        assert settings.proxy_hops == 3
        assert settings.redis_url == "redis://from-dotenv:6379/0"
        assert settings.pepper == "pepper-from-dotenv-file"

    def test_environment_beats_dotenv(
        self, clean_env: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (clean_env / ".env").write_text("IVR_PROXY_HOPS=3\n", encoding="utf-8")
        monkeypatch.setenv("IVR_PROXY_HOPS", "1")
        assert load_settings().proxy_hops == 1

    def test_dotenv_elsewhere_is_ignored(self, clean_env: Path, tmp_path: Path) -> None:
        (tmp_path / ".env").write_text("IVR_PROXY_HOPS=3\n", encoding="utf-8")
        assert load_settings().proxy_hops == 0

    def test_unknown_dotenv_keys_are_ignored(self, clean_env: Path) -> None:
        (clean_env / ".env").write_text("SOMETHING_ELSE=1\nIVR_FLOW=night\n", encoding="utf-8")
        assert load_settings().flow == "night"

    def test_bad_dotenv_value_names_the_variable(self, clean_env: Path) -> None:
        (clean_env / ".env").write_text("IVR_ACCOUNT_MAX_FAILURES=101\n", encoding="utf-8")
        with pytest.raises(SettingsError, match=r"^IVR_ACCOUNT_MAX_FAILURES: "):
            load_settings()

    def test_bad_dotenv_pepper_is_not_echoed(self, clean_env: Path) -> None:
        (clean_env / ".env").write_text("IVR_PEPPER=leaky-pepper\n", encoding="utf-8")
        with pytest.raises(SettingsError) as caught:
            load_settings()
        assert str(caught.value).startswith("IVR_PEPPER: ")
        assert "leaky-pepper" not in str(caught.value)


class TestCreateApp:
    def test_without_redis_url_or_client(self) -> None:
        with pytest.raises(SettingsError) as caught:
            create_app({**TEST_CONFIG, "flows_dir": REPO_ROOT / "flows"})
        assert str(caught.value).startswith("REDIS_URL")

    def test_redis_url_is_enough(self) -> None:
        # Connecting is lazy: the factory does not need the server to be up.
        app = create_app(
            {**TEST_CONFIG, "flows_dir": REPO_ROOT / "flows", "redis_url": "redis://127.0.0.1:1/0"}
        )
        assert "voice" in app.blueprints

    def test_accepts_a_settings_object(self, redis: Any) -> None:
        settings = load_settings(**TEST_CONFIG, flows_dir=REPO_ROOT / "flows", proxy_hops=1)
        app = create_app(settings, redis=redis)
        assert app.config["IVR_SETTINGS"] is settings

    def test_bad_setting_stops_create_app(self, redis: Any) -> None:
        with pytest.raises(SettingsError, match=r"^IVR_PROXY_HOPS: "):
            create_app(
                {**TEST_CONFIG, "flows_dir": REPO_ROOT / "flows", "proxy_hops": 9}, redis=redis
            )

    @staticmethod
    def flows(tmp_path: Path, text: str, name: str = "default") -> Path:
        directory = tmp_path / "flows"
        directory.mkdir(exist_ok=True)
        (directory / f"{name}.yaml").write_text(text, encoding="utf-8")
        return directory

    def test_copy_of_the_default_flow_is_served(self, tmp_path: Path, redis: Any) -> None:
        directory = self.flows(tmp_path, DEFAULT_FLOW)
        create_app({**TEST_CONFIG, "flows_dir": directory}, redis=redis)

    @pytest.mark.parametrize(
        ("old", "new", "where"),
        [
            # A queue that skips authentication altogether.
            ("balances:\n    requires: one_factor", "balances:\n    requires: none",
             "queues.balances.requires"),
            # A path to the agent menu that never authenticates.
            ("    caller_id: true\n    min_digits: 6\n    max_digits: 12\n    next: choose_method",
             "    caller_id: true\n    min_digits: 6\n    max_digits: 12\n    next: main_menu",
             "steps.balance_queue.queue"),
            # A prompt that reads customer data aloud.
            ("prompt: Enter your PIN, then pound.",
             "prompt: Hello {name}, please enter your PIN.", "steps.pin.prompt"),
            # The failure route leads to an agent.
            ("failure_route: other_route", "failure_route: agent_queue", "failure_route"),
            # A step that does not exist.
            ("on_failure: choose_method", "on_failure: chose_method", "on_failure"),
        ],
    )  # fmt: skip
    def test_flow_that_fails_its_checks_is_never_served(
        self, tmp_path: Path, redis: Any, old: str, new: str, where: str
    ) -> None:
        assert old in DEFAULT_FLOW
        directory = self.flows(tmp_path, DEFAULT_FLOW.replace(old, new, 1))
        with pytest.raises(FlowDefinitionError) as caught:
            create_app({**TEST_CONFIG, "flows_dir": directory}, redis=redis)
        assert where in str(caught.value)
        assert str(caught.value).startswith(str(directory / "default.yaml"))
        assert redis.dbsize() == 0

    @pytest.mark.parametrize(
        "text",
        [
            "name: default\nstart: [unclosed\n",
            "- just\n- a list\n",
            DEFAULT_FLOW.replace(
                "  welcome:\n    kind: say", "  welcome:\n    kind: say\n    colour: red"
            ),
            DEFAULT_FLOW + "\nname: again\n",
        ],
        ids=["bad-yaml", "not-a-mapping", "unknown-key", "duplicate-key"],
    )
    def test_malformed_flow_file_is_refused(self, tmp_path: Path, redis: Any, text: str) -> None:
        directory = self.flows(tmp_path, text)
        with pytest.raises(FlowDefinitionError):
            create_app({**TEST_CONFIG, "flows_dir": directory}, redis=redis)

    def test_missing_flow_file(self, tmp_path: Path, redis: Any) -> None:
        directory = self.flows(tmp_path, DEFAULT_FLOW)
        with pytest.raises(FlowDefinitionError, match="flow file not found"):
            create_app({**TEST_CONFIG, "flows_dir": directory, "flow": "night"}, redis=redis)

    def test_ivr_flow_picks_the_file(self, tmp_path: Path, redis: Any) -> None:
        directory = self.flows(
            tmp_path, DEFAULT_FLOW.replace("name: default", "name: night"), "night"
        )
        app = create_app({**TEST_CONFIG, "flows_dir": directory, "flow": "night"}, redis=redis)
        from ivr.runtime import runtime

        with app.app_context():
            assert runtime().flow.name == "night"
