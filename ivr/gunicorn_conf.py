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
import tempfile
from pathlib import Path
from typing import Any

from ivr.errors import SettingsError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as ivr.metrics, which must not be imported here


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


_DIR, _OURS = _metrics_dir()


def _log_format() -> str:
    from ivr.settings import load_settings

    try:
        return load_settings().log_format
    except SettingsError:
        return "text"  # the app refuses to start in each worker, saying which setting is wrong


if _log_format() == "json":
    from ivr.logging_setup import gunicorn_logconfig

    logconfig_dict = gunicorn_logconfig()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _OURS:
        shutil.rmtree(_DIR, ignore_errors=True)
