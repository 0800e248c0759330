"""Save a call played by hand as a scenario test (`flows/tests/*.yaml`) that `ivr flows test`
replays.

The file enrols the customers `ivr dev` enrols, because the replay runs on a fresh service of its
own: a call made as one of the demo customers passes there as it did by hand. It is checked the
way `ivr flows test` reads it (ivr.flows.scenarios) before it is kept, and never overwrites a file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ivr.errors import FlowDefinitionError, IvrError
from ivr.flows.scenarios import ScenarioFile, load_scenarios

HEADER = (
    "# Recorded with the browser phone (/dev/phone of `ivr dev`). Replay it with\n"
    "#   ivr flows test {path}\n"
    "# and edit it like any scenario: trim the `hear:` lines, add expectations.\n"
)
PREFIX = "phone-"
MAX_SLUG = 48


class RecordingError(IvrError):
    """The call cannot be written as a scenario; the message says why."""


def demo_customers() -> list[dict[str, str]]:
    from ivr.dev.customers import DEMO_CUSTOMERS

    return [
        {
            "account": c.account,
            "phone": c.phone,
            "pin": c.pin,
            "passcode": c.passcode,
            "email": c.email,
            "name": c.name,
            "address": c.address,
        }
        for c in DEMO_CUSTOMERS
    ]


def scenario_document(
    flow: str, name: str, caller: str, stir_verstat: str | None, steps: list[dict[str, Any]]
) -> dict[str, Any]:
    """The scenario file as data, validated as `ivr flows test` will read it."""
    scenario: dict[str, Any] = {"name": name, "from": caller}
    if stir_verstat:
        scenario["stir_verstat"] = stir_verstat
    scenario["steps"] = steps
    document = {"flow": flow, "customers": demo_customers(), "scenarios": [scenario]}
    try:
        ScenarioFile.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RecordingError(
            f"cannot save this call as a scenario: {where}: {first['msg']}"
        ) from None
    return document


def file_name(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:MAX_SLUG].strip("-")
    return f"{PREFIX}{slug or 'call'}"


def shown_path(path: Path) -> str:
    """`path` relative to the working directory when it is under it: what to type."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def save_scenario(tests_dir: Path, document: dict[str, Any]) -> Path:
    """Write `document` to a new file in `tests_dir`, named for the scenario; the path."""
    stem = file_name(document["scenarios"][0]["name"])
    tests_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 100):
        path = tests_dir / (f"{stem}.yaml" if n == 1 else f"{stem}-{n}.yaml")
        text = HEADER.format(path=shown_path(path)) + yaml.safe_dump(
            document, sort_keys=False, allow_unicode=True, width=100
        )
        try:
            with path.open("x", encoding="utf-8") as out:
                out.write(text)
        except FileExistsError:
            continue
        try:
            load_scenarios(path)
        except FlowDefinitionError as exc:
            path.unlink()
            raise RecordingError(f"the recorded scenario does not load: {exc}") from None
        return path
    raise RecordingError(f"{tests_dir} holds 99 files named {stem}*.yaml already; pick a new name")
