"""SECURITY.md stays true: the tests it names exist, and the promise numbers the code cites are
promises it makes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "SECURITY.md").read_text()


def test_every_test_file_it_names_exists() -> None:
    named = set(re.findall(r"`((?:integration/)?test_[a-z0-9_]+\.py)", DOC))
    assert named
    missing = [
        name
        for name in sorted(named)
        if not (ROOT / "tests" / (name if "/" in name else f"unit/{name}")).is_file()
    ]
    assert missing == []


def test_every_promise_the_code_cites_is_made() -> None:
    promised = {int(n) for n in re.findall(r"^(\d+)\. ", DOC, re.M)}
    assert promised == set(range(1, len(promised) + 1))
    cited: set[tuple[str, int]] = set()
    for folder in ("ivr", "workers", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for number in re.findall(r"SECURITY(?:\.md)? (\d+)", path.read_text()):
                cited.add((str(path.relative_to(ROOT)), int(number)))
    assert cited
    assert [(path, n) for path, n in sorted(cited) if n not in promised] == []


def test_a_license_matches_the_package_metadata() -> None:
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
