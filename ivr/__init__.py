"""secure-ivr: callers prove who they are before any agent picks up."""

__version__ = "0.1.0"
