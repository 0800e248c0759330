"""What the product imports at run time must come with a plain install, not only with `.[test]`:
`ivr dev` publishes its flow through the scenario runner, so the quick start's `.[dev]` needs it."""

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Import name -> the distribution that provides it, where the two differ.
DISTRIBUTION = {
    "yaml": "pyyaml",
    "argon2": "argon2-cffi",
    "dotenv": "python-dotenv",
    "pydantic_settings": "pydantic-settings",
    "werkzeug": "flask",  # Flask's own dependency, part of its API
    "requests": "twilio",  # the twilio client's HTTP layer, whose errors we classify
    "prometheus_client": "prometheus-client",
}


def _imported(package: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"ivr", "workers", "__future__"}


def test_every_third_party_import_of_the_product_comes_with_the_quick_start_install() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    installed = {re.split(r"[\[<>=!~ ]", dep, maxsplit=1)[0].lower() for dep in declared}
    needed = {DISTRIBUTION.get(name, name) for name in _imported("ivr") | _imported("workers")}
    assert needed - installed == set(), "imported by ivr/ or workers/ but not installed by .[dev]"
