"""gunicorn's configuration for this service, loaded by the master (`-c python:ivr.gunicorn_conf`,
see ivr.processes.web_command), before any worker imports the app.

Metrics: prometheus-client's multiprocess mode needs PROMETHEUS_MULTIPROC_DIR in the
environment before a worker imports it, one directory per server, emptied when the server
starts (stale files would add a dead run's figures to the new one's). `ivr dev` points it into
its data directory; otherwise (`ivr serve`, the Procfile) a private temporary directory is
made here and removed when the server exits. A worker that exits is marked dead.

Logs: with IVR_LOG_FORMAT=json, gunicorn's own lines (errors, access) are JSON objects too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ivr.errors import SettingsError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as ivr.metrics, which must not be imported here
APP_LOAD_ERROR = 4  # gunicorn's exit status for "App failed to load"


def _metrics_dir() -> tuple[Path, bool]:
    """The directory, and whether it is ours to remove."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix="ivr-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, True


def _log_format() -> str:
    """The settings, checked here in the master before any worker boots: every worker would
    fail alike, and gunicorn's master can crash with a traceback (exit 1) while it reaps two
    workers that failed to load at once (seen on 25.3). So the problems are said once, and the
    server stops as gunicorn stops for an app it cannot load (exit 4)."""
    from ivr.settings import load_settings

    try:
        return load_settings().log_format
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"Error: {problem}", file=sys.stderr)
        raise SystemExit(APP_LOAD_ERROR) from None


_LOG_FORMAT = _log_format()  # first: a server that will not start leaves nothing behind
_DIR, _OURS = _metrics_dir()

if _LOG_FORMAT == "json":
    from ivr.logging_setup import gunicorn_logconfig

    logconfig_dict = gunicorn_logconfig()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _OURS:
        shutil.rmtree(_DIR, ignore_errors=True)
