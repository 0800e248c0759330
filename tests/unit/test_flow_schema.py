"""The JSON Schema editors use to check a flow while an admin types (`ivr flows schema`).

It must say what the model says: the shipped file is what the model generates now, every
shipped flow passes it, and the mistakes an admin makes most are flagged where they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from ivr.errors import FlowDefinitionError
from ivr.flows import json_schema
from ivr.flows.json_schema import agent_policy_schema, flow_schema, flows_schema, render
from ivr.flows.loader import parse_flow

REPO_ROOT = Path(__file__).resolve().parents[2]
FLOWS = REPO_ROOT / "flows"
FLOW_SCHEMA = FLOWS / json_schema.FLOW_SCHEMA_FILE
POLICY_SCHEMA = FLOWS / json_schema.AGENT_POLICY_SCHEMA_FILE
POLICY = FLOWS / "agents.yaml"
SHIPPED_FLOWS = sorted(p for p in FLOWS.glob("*.yaml") if p != POLICY) + sorted(
    (REPO_ROOT / "tests" / "flows").glob("*.yaml")
)
MODELINE = "# yaml-language-server: $schema="

GOOD = """\
name: tiny
start: hello
authentication:
  failure_route: bye
queues:
  general: {requires: one_factor, roles: [agent]}
steps:
  hello:
    kind: say
    say: Hello.
    next: pick
  pick:
    kind: menu
    prompt: Press 1 for an agent.
    choices:
      - key: 1
        next: ask_pin
    on_exhausted: bye
  ask_pin:
    kind: authenticate
    method: pin
    prompt: Enter your PIN.
    next: agent
    on_exhausted: bye
  agent:
    kind: enqueue
    queue: general
  bye:
    kind: hangup
"""


def _errors(text: str) -> list[jsonschema.ValidationError]:
    validator = jsonschema.Draft7Validator(flow_schema())
    return list(validator.iter_errors(yaml.safe_load(text)))


def _shipped_schema(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


class TestTheShippedSchema:
    @pytest.mark.parametrize(
        ("path", "generate", "command"),
        [
            (FLOW_SCHEMA, flow_schema, json_schema.REGENERATE),
            (POLICY_SCHEMA, agent_policy_schema, json_schema.REGENERATE_POLICY),
        ],
        ids=["flow", "agent-policy"],
    )
    def test_is_what_the_model_generates_now(self, path: Path, generate: Any, command: str) -> None:
        assert path.read_text(encoding="utf-8") == render(generate()), (
            f"{path.name} is out of step with the model; regenerate it: {command}"
        )

    @pytest.mark.parametrize("path", [FLOW_SCHEMA, POLICY_SCHEMA], ids=lambda p: p.name)
    def test_is_a_draft_07_schema_with_an_id(self, path: Path) -> None:
        schema = _shipped_schema(path)
        assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
        assert schema["$id"].endswith("/" + path.name)
        jsonschema.Draft7Validator.check_schema(schema)
        assert "$defs" not in json.dumps(schema) and "discriminator" not in json.dumps(schema)

    def test_every_key_an_admin_writes_is_described(self) -> None:
        """Hover and completion show these; a new field without one fails here."""
        schema = flow_schema()
        owners = {"Flow": schema, **schema["definitions"]}
        undescribed = [
            f"{owner}.{name}"
            for owner, node in owners.items()
            for name, prop in node.get("properties", {}).items()
            if not prop.get("description") and name != "kind"
        ]
        assert undescribed == []
        assert all(d.get("description") for d in schema["definitions"].values())


class TestShippedFiles:
    @pytest.mark.parametrize("path", SHIPPED_FLOWS, ids=lambda p: p.name)
    def test_every_shipped_flow_passes_the_schema(self, path: Path) -> None:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        jsonschema.Draft7Validator(_shipped_schema(FLOW_SCHEMA)).validate(data)

    def test_the_agent_policy_passes_its_schema(self) -> None:
        data = yaml.safe_load(POLICY.read_text(encoding="utf-8"))
        jsonschema.Draft7Validator(_shipped_schema(POLICY_SCHEMA)).validate(data)

    @pytest.mark.parametrize("path", [*SHIPPED_FLOWS, POLICY], ids=lambda p: p.name)
    def test_each_names_its_schema_on_the_first_line(self, path: Path) -> None:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith(MODELINE)
        target = (path.parent / first.removeprefix(MODELINE)).resolve()
        assert target == (POLICY_SCHEMA if path == POLICY else FLOW_SCHEMA)

    def test_the_loader_reads_past_the_comment(self) -> None:
        assert parse_flow(f"{MODELINE}flow.schema.json\n{GOOD}") == parse_flow(GOOD)


# Each snippet is refused by the model too: the schema flags, as the admin types, what
# `ivr flows check` would refuse later. `at` is where the editor puts the squiggle.
BAD = {
    "unknown key": (GOOD.replace("    say: Hello.\n", "    say: Hello.\n    nxt: pick\n"), "nxt"),
    "unknown kind": (GOOD.replace("kind: say", "kind: speak"), "speak"),
    "missing next": (GOOD.replace("    next: pick\n", ""), "next"),
    "key of another kind": (GOOD.replace("kind: hangup", "kind: hangup\n    next: hello"), "next"),
    "bad step name": (GOOD.replace("  bye:", "  Bye:"), "Bye"),
    "no queue requirement": (GOOD.replace("requires: one_factor", "requires: none"), "none"),
    "key not a phone key": (GOOD.replace("key: 1", "key: 12"), "12"),
    "delivered code, no way out": (
        GOOD.replace("method: pin", "method: sms_otp"),
        "on_unavailable",
    ),
}


class TestMistakes:
    def test_the_good_snippet_passes_both(self) -> None:
        assert _errors(GOOD) == []
        parse_flow(GOOD)

    @pytest.mark.parametrize("text", [t for t, _ in BAD.values()], ids=list(BAD))
    def test_the_model_refuses_it_too(self, text: str) -> None:
        with pytest.raises(FlowDefinitionError):
            parse_flow(text)

    @pytest.mark.parametrize(("text", "named"), list(BAD.values()), ids=list(BAD))
    def test_the_schema_flags_it(self, text: str, named: str) -> None:
        errors = _errors(text)
        assert errors, "the schema passed a flow the model refuses"
        # Checked against the one kind the step names, the error names the culprit
        # (a plain union would only say "is not valid under any of the given schemas").
        best = jsonschema.exceptions.best_match(errors)
        assert named in best.message

    def test_an_unknown_key_is_flagged_on_its_step(self) -> None:
        (error,) = _errors(BAD["unknown key"][0])
        assert list(error.absolute_path) == ["steps", "hello"]


class TestCommand:
    def test_prints_the_flow_schema(self) -> None:
        result = CliRunner().invoke(flows_schema, [])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == flow_schema()

    def test_writes_the_file_it_is_given(self, tmp_path: Path) -> None:
        out = tmp_path / "flow.schema.json"
        result = CliRunner().invoke(flows_schema, ["--output", str(out)])
        assert result.exit_code == 0, result.output
        assert out.read_text(encoding="utf-8") == FLOW_SCHEMA.read_text(encoding="utf-8")
        assert result.output == f"wrote {out}\n"

    def test_the_agent_policy_schema_on_request(self) -> None:
        result = CliRunner().invoke(flows_schema, ["--agent-policy"])
        assert result.exit_code == 0, result.output
        assert result.output == POLICY_SCHEMA.read_text(encoding="utf-8")
