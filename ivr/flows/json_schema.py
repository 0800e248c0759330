"""JSON Schemas for the flow and agent policy files, generated from their pydantic models, so
an editor (the YAML language server, through the `# yaml-language-server: $schema=` comment at
the top of each file) completes keys and flags mistakes while an admin types.

The schemas are draft-07, the newest draft the YAML language server validates. Pydantic writes
2020-12 with an OpenAPI `discriminator`, which that server ignores: the step union is rewritten
as `if kind is X then the X step`, so a step is checked against the one kind it names and its
unknown keys are flagged by name. The model stays the authority (`ivr flows check` runs its
cross-field rules and the graph checks); the schema is what an editor can show at the keystroke.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from ivr.auth.agent_policy import AgentPolicy
from ivr.flows.schema import DELIVERED_METHODS, Flow

DRAFT = "http://json-schema.org/draft-07/schema#"
SCHEMA_BASE = "https://secure-ivr.invalid/schema/"
FLOW_SCHEMA_FILE = "flow.schema.json"
AGENT_POLICY_SCHEMA_FILE = "agents.schema.json"
REGENERATE = "ivr flows schema --output flows/flow.schema.json"
REGENERATE_POLICY = "ivr flows schema --agent-policy --output flows/agents.schema.json"


def flow_schema() -> dict[str, Any]:
    """The flow file's schema: `Flow.model_json_schema()` in a shape editors understand."""
    schema = _draft07(Flow)
    choice = schema["definitions"]["Choice"]["properties"]["key"]
    # YAML reads `key: 1` as a number, and the model takes it (`Choice._key_as_text`).
    choice["anyOf"].insert(1, {"type": "integer", "minimum": 0, "maximum": 9})
    # The one cross-field rule worth an editor's warning: a delivered factor needs a way out.
    schema["definitions"]["AuthenticateStep"].update(
        {
            "if": {
                "properties": {"method": {"enum": list(DELIVERED_METHODS)}},
                "required": ["method"],
            },
            "then": {"required": ["on_unavailable"]},
        }
    )
    return _framed(schema, FLOW_SCHEMA_FILE, "secure-ivr call flow", Flow.__doc__ or "")


def agent_policy_schema() -> dict[str, Any]:
    """The agent policy file's schema (flows/agents.yaml)."""
    schema = _draft07(AgentPolicy)
    levels = schema["definitions"]["RoleFields"]["properties"]
    levels["one_factor"]["description"] = "Fields shown once the caller proved one factor."
    levels["two_factor"]["description"] = "Fields shown in addition once they proved two."
    for level in levels.values():
        level["uniqueItems"] = True  # `RoleFields._once`
    schema["properties"]["roles"]["description"] = "What each agent role may see, by role."
    return _framed(
        schema,
        AGENT_POLICY_SCHEMA_FILE,
        "secure-ivr agent policy",
        "What agents see of a call: per role, the fields shown at one factor, and those shown "
        "in addition at two. Before one factor an agent sees nothing.",
    )


def render(schema: dict[str, Any]) -> str:
    """The text written to the shipped file: stable key order, so a diff shows a real change."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _framed(schema: dict[str, Any], file: str, title: str, about: str) -> dict[str, Any]:
    schema.pop("title", None)
    schema.pop("description", None)
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_BASE + file,
        "title": title,
        "description": about,
        **schema,
    }


def _draft07(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(ref_template="#/definitions/{model}")
    if "$defs" in raw:
        raw["definitions"] = raw.pop("$defs")
    return _rewrite(raw, raw.get("definitions", {}))


def _rewrite(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _rewrite(value, definitions) for key, value in node.items()}
    if "discriminator" in node and "oneOf" in node:
        return _tagged(node, definitions)
    patterns = node.get("patternProperties", {})
    if len(patterns) == 1 and "additionalProperties" not in node:
        # A mapping whose keys have a pattern (step and queue names): a key that does not
        # match is an error, as it is for the model, not a key nothing checks.
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": next(iter(patterns))}
    if "$ref" in node and len(node) > 1:
        # draft-07 ignores the siblings of `$ref`: keep descriptions and defaults beside it.
        return {"allOf": [{"$ref": node.pop("$ref")}], **node}
    return node


def _tagged(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """A discriminated union as `if tag == X then X`, plus the tag's values for completion,
    each described by its model's docstring (`enumDescriptions`, which editors show)."""
    tag = node["discriminator"]["propertyName"]
    mapping: dict[str, str] = node["discriminator"]["mapping"]
    rest = {k: v for k, v in node.items() if k not in ("discriminator", "oneOf")}
    described = [
        " ".join(definitions.get(ref.rsplit("/", 1)[-1], {}).get("description", "").split())
        for ref in mapping.values()
    ]
    return {
        **rest,
        "type": "object",
        "required": [tag],
        "properties": {
            tag: {
                "enum": list(mapping),
                "enumDescriptions": described,
                "title": tag.capitalize(),
                "description": "What the step does; each kind has keys of its own.",
            }
        },
        "allOf": [
            {
                "if": {"properties": {tag: {"const": value}}, "required": [tag]},
                "then": {"$ref": ref},
            }
            for value, ref in mapping.items()
        ],
    }


def _write(schema: dict[str, Any], output: Path | None) -> None:
    text = render(schema)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")


@click.command("schema")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the schema to this file instead of printing it.",
)
@click.option(
    "--agent-policy",
    is_flag=True,
    help="The schema of the agent policy (agents.yaml) instead of a flow's.",
)
def flows_schema(output: Path | None, agent_policy: bool) -> None:
    """Print the JSON Schema of a flow file, for editors that complete and check YAML.

    A flow refers to it with `# yaml-language-server: $schema=flow.schema.json` on its first
    line (the path is relative to the flow)."""
    _write(agent_policy_schema() if agent_policy else flow_schema(), output)
