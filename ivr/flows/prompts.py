"""What a prompt may template, decided in one place for the checker and the engine alike.

Only whole `{name}` placeholders from an allow-list; no format specs, no attribute access, so
what the checker passes is exactly what the engine can speak.
"""

from __future__ import annotations

import re

ALLOWED_FIELDS = frozenset({"attempts_left"})
_PLACEHOLDER = re.compile(r"{([^{}]*)}")


def placeholders(text: str) -> list[str]:
    """Every `{...}` in a prompt, as written (spaces and specs included)."""
    return _PLACEHOLDER.findall(text)


def unbalanced(text: str) -> bool:
    stripped = _PLACEHOLDER.sub("", text)
    return "{" in stripped or "}" in stripped


def fill(text: str, values: dict[str, object]) -> str:
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)
