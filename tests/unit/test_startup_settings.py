"""Start-up problems are listed all at once, one line each naming the variable (issue 9, 3), and
the one Redis connection carries the options managed Redis needs (issue 9, 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from redis.connection import SSLConnection
from redis.exceptions import ConnectionError, TimeoutError

from ivr.cli import cli
from ivr.errors import SettingsError
from ivr.runtime import connect_redis
from ivr.settings import load_settings, masked_redis_url
from ivr.worker import connect as worker_connect

BAD = {
    "REDIS_URL": "localhost:6379",
    "IVR_SESSION_TTL": "5",
    "IVR_PIN_MIN_LENGTH": "three",
    "IVR_PEPPER": "short-pepper",
}


pytestmark = pytest.mark.usefixtures("clean_env")


def problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return caught.value.problems


class TestEveryProblemAtOnce:
    def test_each_bad_setting_is_one_line_naming_its_variable(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        found = problems(monkeypatch, **BAD)
        assert sorted(line.split(":")[0] for line in found) == sorted(BAD)
        assert all("\n" not in line for line in found)
        assert not any("short-pepper" in line for line in found)  # a secret is never echoed

    def test_the_cli_prints_them_all_and_no_traceback(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name, value in BAD.items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(cli, ["customers", "show", "12345678"])
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert sorted(line.split(":")[1].strip() for line in lines) == sorted(BAD)
        assert all(line.startswith("Error: ") for line in lines)
        assert "Traceback" not in result.output
        assert "short-pepper" not in result.output


class TestRedisUrl:
    def test_a_url_without_a_scheme_gets_the_fix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        (line,) = problems(monkeypatch, REDIS_URL="localhost:6379")
        assert line.startswith("REDIS_URL: must start with redis://, rediss:// (TLS) or unix://")
        assert "did you mean redis://localhost:6379?" in line

    @pytest.mark.parametrize(
        "url", [":hunter2@cache.internal:6379", "redis://:hunter2@cache.internal:port/0"]
    )
    def test_its_password_is_never_shown(self, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
        (line,) = problems(monkeypatch, REDIS_URL=url)
        assert line.startswith("REDIS_URL: ")
        assert "hunter2" not in line
        assert ":***@cache.internal" in line

    @pytest.mark.parametrize(
        "url", ["redis://localhost:6379/0", "rediss://:pw@h.example.com:25580", "unix:///r.sock"]
    )
    def test_good_urls(self, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
        monkeypatch.setenv("REDIS_URL", url)
        assert load_settings().redis_url == url

    def test_masking(self) -> None:
        assert masked_redis_url("rediss://:p@ss@h:6380/0") == "rediss://:***@h:6380/0"
        assert masked_redis_url("redis://user:pw@h/0") == "redis://user:***@h/0"
        assert masked_redis_url("redis://h/0?password=pw&db=1") == "redis://h/0?password=***&db=1"
        assert masked_redis_url("redis://h:6379/0") == "redis://h:6379/0"


class TestManagedRedis:
    def test_certificate_options_reach_every_connection(self, tmp_path: Path) -> None:
        ca = tmp_path / "ca.pem"
        ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
        settings = load_settings(
            redis_url="rediss://:pw@redis.example.com:25580",
            redis_ssl_cert_reqs="none",
            redis_ssl_ca_certs=ca,
        )
        web = connect_redis(settings.redis_url, settings)
        assert web.connection_pool.connection_class is SSLConnection
        kwargs = web.connection_pool.connection_kwargs
        assert kwargs["ssl_cert_reqs"] == "none"
        assert kwargs["ssl_ca_certs"] == str(ca)

    def test_the_worker_reads_them_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("IVR_REDIS_SSL_CERT_REQS", "optional")
        monkeypatch.setenv("REDIS_URL", "rediss://redis.example.com:6380/0")
        pool = worker_connect("rediss://redis.example.com:6380/0").connection_pool
        assert pool.connection_class is SSLConnection
        assert pool.connection_kwargs["ssl_cert_reqs"] == "optional"
        assert pool.connection_kwargs["socket_timeout"] is None  # rq blocks on its queue

    def test_certificates_are_checked_by_default(self) -> None:
        pool = connect_redis("rediss://redis.example.com:6380/0", load_settings()).connection_pool
        assert pool.connection_kwargs["ssl_cert_reqs"] == "required"

    @pytest.mark.parametrize(
        ("name", "value"),
        [("IVR_REDIS_SSL_CERT_REQS", "none"), ("IVR_REDIS_SSL_CA_CERTS", __file__)],
    )
    def test_tls_options_need_a_tls_url(
        self, monkeypatch: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        found = problems(monkeypatch, REDIS_URL="redis://localhost:6379/0", **{name: value})
        assert found == [f"{name}: applies only to a rediss:// (TLS) REDIS_URL (got {value!r})"]

    def test_a_missing_ca_file_is_named(self, monkeypatch: pytest.MonkeyPatch) -> None:
        (line,) = problems(
            monkeypatch, REDIS_URL="rediss://h:6380", IVR_REDIS_SSL_CA_CERTS="/nowhere/ca.pem"
        )
        assert line.startswith("IVR_REDIS_SSL_CA_CERTS: ")

    def test_web_retries_a_broken_connection_not_a_timeout(self) -> None:
        # A restart breaks pooled connections: sent again at once. A timeout already cost 2 s
        # of the call's lock: the caller hears the apology instead.
        retry = connect_redis("redis://127.0.0.1:1/0").get_retry()
        assert retry is not None and retry.get_retries() >= 1
        assert ConnectionError in retry._supported_errors
        assert TimeoutError not in retry._supported_errors
