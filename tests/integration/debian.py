"""Debian packages the integration tests need beyond what pip installs, installed when missing.

The README's one test command must pass on a fresh machine, so a test that needs a program
pip cannot ship (Chromium; a redis-server built with TLS) installs the distribution's package
with apt-get itself (CI runs as root) and fails, loudly and with apt's own words, when it
cannot. Such a test never skips.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time

import pytest

#: apt-get update plus chromium's install took about 40 s here; a slow mirror gets far longer.
APT_TIMEOUT = 900
_APT = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300"]


def _apt(purpose: str, *args: str) -> None:
    command = [*_APT, *args]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"installing {purpose}: {' '.join(command)}: {exc}", pytrace=False)
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        pytest.fail(
            f"installing {purpose}: {' '.join(command)} exited {done.returncode}:\n{output}",
            pytrace=False,
        )


@functools.cache
def _updated() -> None:
    _apt("the package lists", "update")


def apt_install(package: str, purpose: str, elsewhere: str) -> None:
    """Install `package` for `purpose`; `elsewhere` says what to do where apt-get cannot run."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(
            f"{purpose}: as root on Debian or Ubuntu the tests install {package} themselves; "
            f"{elsewhere}",
            pytrace=False,
        )
    started = time.monotonic()
    _updated()
    _apt(purpose, "install", "-y", "--no-install-recommends", package)
    print(f"installed {package} in {time.monotonic() - started:.0f} s")
