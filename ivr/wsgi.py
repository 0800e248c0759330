"""The app gunicorn serves (`processes.WSGI_APP`): the factory, with its start-up problems
reported the way gunicorn reports an app it cannot load.

gunicorn prints a traceback for any other exception in a worker's boot, one per worker; an
`AppImportError` it prints as its message alone, then stops the server (exit 4) instead of
booting more workers that would fail the same way.
"""

from __future__ import annotations

from flask import Flask
from gunicorn.errors import AppImportError

from ivr.app import create_app
from ivr.errors import IvrError, SettingsError


def application() -> Flask:
    try:
        return create_app()
    except SettingsError as exc:
        raise AppImportError("\n".join(f"Error: {p}" for p in exc.problems)) from None
    except IvrError as exc:
        lines = str(exc).splitlines()
        raise AppImportError("\n".join(f"Error: {line}" for line in lines)) from None
