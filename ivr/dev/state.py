"""What `ivr dev` keeps in its data directory: the running stack's state file, the lock that
makes it one stack per directory, and the secrets kept across restarts."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "dev.json"
LOCK_FILE = "dev.lock"


@dataclass(frozen=True)
class DevState:
    base_url: str
    auth_token: str
    redis_url: str
    outbox: str
    api_token: str
    pid: int = 0  # of `ivr dev`

    @classmethod
    def read(cls, data_dir: Path) -> DevState | None:
        """The running stack's state; None when no `ivr dev` runs on `data_dir` (a state file
        left by one that was killed does not count: its lock is free)."""
        if DevLock.holder(data_dir) is None:
            return None
        try:
            return cls(**json.loads((data_dir / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, data_dir: Path) -> None:
        path, part = data_dir / STATE_FILE, data_dir / f"{STATE_FILE}.part"
        part.write_text(json.dumps(self.__dict__, indent=2))
        part.chmod(0o600)
        part.replace(path)  # whole or not at all, for `ivr call` reading it meanwhile


class DevLock:
    """An exclusive flock on `dev.lock`, with the holder's pid written in it. The kernel drops
    it however the process ends, so no stale lock can outlive a killed stack; the file itself
    stays (removing a lock file races with the next one to open it)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def holder(data_dir: Path) -> int | None:
        """The pid of the `ivr dev` holding `data_dir` (0 while it has not written it yet), or
        None when nobody does."""
        try:
            fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def dev_secret(data_dir: Path, name: str) -> str:
    """A random secret kept across restarts (auth token, code key), so what a running
    `ivr call` holds, and the codes already sent, keep working."""
    path = data_dir / name
    if path.is_file():
        return path.read_text().strip()
    token = secrets.token_hex(16)
    path.write_text(token)
    path.chmod(0o600)
    return token
