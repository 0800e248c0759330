"""Flow files -> a typed `Flow`, with every error pinned to file:line:column.

YAML is composed into nodes first (safe loader, no tags, no duplicate keys) so each value keeps
its position; pydantic then validates the plain data, and its error locations are mapped back
to those positions.

A flow file is input from whoever can edit it, so composing is bounded before any work grows
with it: no anchors or aliases (an alias is the only way a small file becomes a huge or cyclic
document), a size, a nesting depth and a count of values far above any real flow's.
"""

from __future__ import annotations

import difflib
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.composer import Composer

from ivr.errors import FlowDefinitionError, Problem
from ivr.flows.schema import STEP_KINDS, Flow

_STEP_REFS = {"start", "next", "on_exhausted", "on_failure", "on_unavailable", "failure_route"}
_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
Marks = dict[tuple[str | int, ...], tuple[int, int]]
# The bounds on one flow file, far above any real flow and low enough that a hostile file costs
# a few seconds at most. The shipped flow: 15 steps, 6 KB, 320 values, nested 6 deep; so a flow
# of 20,000 steps written like it fits both MAX_FLOW_BYTES and MAX_FLOW_NODES (README, "Call
# flows": the size limit).
MAX_FLOW_BYTES = 8 * 1024 * 1024
MAX_FLOW_DEPTH = 32
MAX_FLOW_NODES = 500_000
_STEPS_ADMITTED = "20,000"
_NO_ALIASES = (
    "a flow never needs anchors or aliases: write the value out in full, "
    "or send several steps to one step with `next:`"
)


def load_flow(path: str | Path) -> Flow:
    return load_flow_with_marks(path)[0]


def load_flow_with_marks(path: str | Path) -> tuple[Flow, Marks]:
    return parse_flow_with_marks(_read(Path(path)), str(path))


def compose_file(path: str | Path, start_hint: str) -> tuple[Any, Marks]:
    """Any other YAML file of ours (the agent policy) as plain data with the position of each
    value, read and composed under the same bounds and refusals as a flow; `start_hint` says
    how such a file begins, for an empty one."""
    return _compose(_read(Path(path)), str(path), start_hint)


def _read(path: Path) -> str:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FLOW_BYTES + 1)  # never more, whatever the file is
        if len(raw) > MAX_FLOW_BYTES:
            raise FlowDefinitionError([_too_large(str(path))])
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = Problem(str(path), None, None, "", f"cannot read: {exc}")
        raise FlowDefinitionError([problem]) from None


def _too_large(filename: str) -> Problem:
    return Problem(
        filename,
        None,
        None,
        "",
        f"file is larger than {MAX_FLOW_BYTES} bytes",
        f"the limit of a flow file (MAX_FLOW_BYTES, {MAX_FLOW_BYTES // 1024 // 1024} MiB) admits "
        f"{_STEPS_ADMITTED} steps written like flows/default.yaml; is this the right file? If "
        "it is, remove long comments and steps no call reaches, or raise MAX_FLOW_BYTES in "
        "ivr/flows/loader.py",
    )


def parse_flow(text: str, filename: str = "<flow>") -> Flow:
    flow, _ = parse_flow_with_marks(text, filename)
    return flow


def parse_flow_with_marks(text: str, filename: str = "<flow>") -> tuple[Flow, Marks]:
    """The flow, plus where each of its values was written (for the graph checks' messages)."""
    if len(text.encode("utf-8")) > MAX_FLOW_BYTES:
        raise FlowDefinitionError([_too_large(filename)])
    with gc_paused():
        return _parse(text, filename)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Without the cyclic garbage collector for a while. Composing and validating a large flow
    makes hundreds of thousands of objects, and no cycle among them; the collector would walk
    them over and over as they pile up (more than half the time of a 10,000-step flow)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse(text: str, filename: str) -> tuple[Flow, Marks]:
    data, marks = _compose(text, filename)
    if not isinstance(data, dict):
        line, col = marks.get((), (1, 1))
        raise FlowDefinitionError(
            [Problem(filename, line, col, "", "a flow is a mapping", "start with `name:`")]
        )
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        raise FlowDefinitionError(_problems(exc, data, marks, filename)) from None
    return flow, marks


class _Refused(yaml.MarkedYAMLError):
    def __init__(self, mark: yaml.Mark, problem: str, hint: str) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.hint = hint


class _Bounded(Composer):
    """Refuses anchors, aliases, deep nesting and too many values while composing, before any
    of them can cost more than the bound (PyYAML's composer is recursive and follows aliases).

    The composer is PyYAML's own, in Python, over the parser's events, whichever parser makes
    them: that is where each refusal is decided, with the event's mark."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                event.start_mark, f"YAML alias `*{event.anchor}` is not allowed", _NO_ALIASES
            )
        if event.anchor is not None:
            raise _Refused(
                event.start_mark, f"YAML anchor `&{event.anchor}` is not allowed", _NO_ALIASES
            )
        self._nodes += 1
        if self._nodes > MAX_FLOW_NODES:
            raise _Refused(
                event.start_mark,
                f"more than {MAX_FLOW_NODES} values in one flow",
                f"the limit (MAX_FLOW_NODES) admits {_STEPS_ADMITTED} steps written like "
                "flows/default.yaml; remove what is not part of the call flow, or raise "
                "MAX_FLOW_NODES in ivr/flows/loader.py",
            )
        if not isinstance(event, yaml.CollectionStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_FLOW_DEPTH:
            raise _Refused(
                event.start_mark,
                f"nested more than {MAX_FLOW_DEPTH} levels deep",
                "a flow nests only steps, their choices and lists of words",
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _PythonLoader(_Bounded, yaml.SafeLoader):
    """Scanned and parsed in Python: the fallback when PyYAML was built without libyaml."""


_LOADERS: list[type[_Bounded]] = [_PythonLoader]
if yaml.__with_libyaml__:

    class _LibyamlLoader(_Bounded, yaml.CSafeLoader):
        """Scanned and parsed by libyaml (C, about ten times faster), composed as above."""

        def __init__(self, stream: str) -> None:
            yaml.CSafeLoader.__init__(self, stream)
            Composer.__init__(self)

    _LOADERS.insert(0, _LibyamlLoader)
LOADER = _LOADERS[0]  # libyaml's whenever PyYAML has it


def _compose(
    text: str,
    filename: str,
    start_hint: str = "start with `name:`",
    loader_class: type[_Bounded] | None = None,
) -> tuple[Any, Marks]:
    loader_class = loader_class or LOADER
    loader: _Bounded | None = None
    try:
        loader = loader_class(text)  # PyYAML's reader refuses a control character right here
        node = loader.get_single_node()
        if node is None:
            raise FlowDefinitionError([Problem(filename, 1, 1, "", "file is empty", start_hint)])
        marks: Marks = {}
        problems: list[Problem] = []
        data = _plain(node, (), marks, problems, filename, loader)
    except _Refused as exc:
        mark = exc.problem_mark
        line, col = mark.line + 1, mark.column + 1
        raise FlowDefinitionError(
            [Problem(filename, line, col, "", exc.problem or "", exc.hint)]
        ) from None
    except yaml.MarkedYAMLError as exc:
        if (
            exc.problem == _LIBYAML_TOO_DEEP
            and exc.problem_mark
            and loader_class is not _PythonLoader
        ):
            _refuse_nesting(text, exc.problem_mark, filename)
        raise FlowDefinitionError([_syntax_problem(exc, text, filename)]) from None
    except yaml.reader.ReaderError as exc:
        # A character YAML refuses (NUL, other control characters): unmarked, so locate it here.
        # libyaml counts the position in bytes of UTF-8, PyYAML in characters.
        at = exc.position
        if issubclass(loader_class, yaml.CSafeLoader):
            at = len(text.encode("utf-8")[:at].decode("utf-8", errors="ignore"))
        before = text[:at]
        line, col = before.count("\n") + 1, at - (before.rfind("\n") + 1) + 1
        problem = Problem(
            filename,
            line,
            col,
            "",
            f"invalid YAML: character {chr(exc.character)!r} is not allowed",
            "remove it; control characters are often pasted in from other programs",
        )
        raise FlowDefinitionError([problem]) from None
    except yaml.YAMLError as exc:
        raise FlowDefinitionError(
            [Problem(filename, None, None, "", f"invalid YAML: {exc}")]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    if problems:
        raise FlowDefinitionError(problems)
    return data, marks


_LIBYAML_TOO_DEEP = "exceeded maximum nesting depth"


def _refuse_nesting(text: str, mark: yaml.Mark, filename: str) -> None:
    """libyaml refuses nesting over 1000 levels while scanning ahead, before any event reaches
    `_Bounded`: compose the text up to there in Python, which refuses at MAX_FLOW_DEPTH, where
    it is written. Only a file nested that deep pays for it."""
    _compose(text[: mark.index + 1], filename, loader_class=_PythonLoader)


_OPENERS = {"while parsing a flow sequence": "[", "while parsing a flow mapping": "{"}
_CLOSERS = {"[": "]", "{": "}"}


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, filename: str) -> Problem:
    """PyYAML's error, at the line to fix, with what to do for the usual slips: a bracket or
    quote never closed (reported where PyYAML gave up, often lines later: point at the
    opening), a tab in the indentation, a `: ` inside unquoted text."""
    problem, start, end = exc.problem or str(exc), exc.context_mark, exc.problem_mark
    mark, hint = end or start, ""
    later = end is not None and start is not None and end.line > start.line
    gave_up = f" (noticed at line {end.line + 1})" if later and end else ""
    opener = _OPENERS.get(exc.context or "")
    if opener and start is not None:
        closer = _CLOSERS[opener]
        mark, problem = start, f"this `{opener}` is never closed{gave_up}"
        hint = f"end the list with `{closer}` on the same line, with commas between its items"
        if opener == "{":
            hint = f"end it with `{closer}` on the same line, with commas between its entries"
    elif exc.context == "while scanning a quoted scalar" and start is not None:
        quote = text.splitlines()[start.line][start.column : start.column + 1] or '"'
        mark, problem = start, f"this quote `{quote}` is never closed{gave_up}"
        hint = f"end the text with `{quote}`, or leave the quotes out"
    elif end is not None and _char_at(text, end) == "\t":
        before = text.splitlines()[end.line][: end.column]
        if before.strip():
            problem, hint = "a tab where YAML allows only spaces", "replace the tab with a space"
        else:
            problem = "a tab in the indentation: YAML indents with spaces only"
            hint = "indent with spaces, two per level as in the rest of the file"
    elif problem.startswith("mapping values are not allowed"):
        hint = "a `: ` inside text starts a new key: put the whole text in quotes"
    line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
    return Problem(filename, line, col, "", f"invalid YAML: {problem}", hint)


def _char_at(text: str, mark: yaml.Mark) -> str:
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    return line[mark.column : mark.column + 1]


def _plain(
    node: yaml.Node,
    path: tuple[str | int, ...],
    marks: Marks,
    problems: list[Problem],
    filename: str,
    constructor: yaml.constructor.SafeConstructor,
) -> Any:
    """Turn a node into plain data, rejecting what a flow never needs (tags, anchors' merges)."""
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
        _add(problems, filename, node, path, f"tag `{node.tag}` is not allowed", "remove the tag")
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag == "tag:yaml.org,2002:merge"
            ):
                _add(problems, filename, key_node, path, "keys must be plain words", "")
                continue
            key = str(key_node.value)
            if key in out:
                _add(
                    problems,
                    filename,
                    key_node,
                    path,
                    f"duplicate key `{key}`",
                    "each key may appear once; merge the two entries",
                )
                continue
            out[key] = _plain(value_node, (*path, key), marks, problems, filename, constructor)
            # the key's position, not the value's: that is where an admin looks for the line
            marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _plain(child, (*path, i), marks, problems, filename, constructor)
            for i, child in enumerate(node.value)
        ]
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        _add(problems, filename, node, path, f"bad value: {exc.problem}", "write plain text")
    except ValueError:  # e.g. a 5000-digit number, or 2001-13-45 read as a date
        text = str(node.value)
        shown = text if len(text) <= 24 else text[:20] + "..."
        kind = node.tag.rsplit(":", 1)[-1]
        _add(problems, filename, node, path, f"`{shown}` is not a valid {kind}", "quote it")
    return None


def _add(
    problems: list[Problem], filename: str, node: yaml.Node, path: tuple, message: str, hint: str
) -> None:
    problems.append(
        Problem(
            filename,
            node.start_mark.line + 1,
            node.start_mark.column + 1,
            dotted(path),
            message,
            hint,
        )
    )


def dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _data_path(loc: tuple[str | int, ...], data: dict[str, Any]) -> tuple[str | int, ...]:
    """Drop the tag pydantic inserts for the step union: `steps.hi.say.next` -> `steps.hi.next`."""
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]  # a dict key failed validation: point at the key itself
    steps = data.get("steps")
    if len(loc) >= 3 and loc[0] == "steps" and isinstance(steps, dict):
        step = steps.get(loc[1])
        if isinstance(step, dict) and step.get("kind") == loc[2]:
            return (loc[0], loc[1], *loc[3:])
    return tuple(loc)


def _problems(
    exc: ValidationError, data: dict[str, Any], marks: Marks, filename: str
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        path = _data_path(tuple(err["loc"]), data)
        located = path
        while located and located not in marks:
            located = located[:-1]
        line, col = marks.get(located, (None, None))
        message, hint = _explain(err, path, data)
        problems.append(Problem(filename, line, col, dotted(path), message, hint))
    return problems


def _explain(
    err: dict[str, Any], path: tuple[str | int, ...], data: dict[str, Any]
) -> tuple[str, str]:
    kind = err["type"]
    name = path[-1] if path else ""
    queue_hint = _queue_hint(kind, err, path, data)
    if queue_hint:
        return queue_hint
    if kind == "extra_forbidden":
        allowed = _allowed_keys(path[:-1], data)
        close = difflib.get_close_matches(str(name), allowed, n=1)
        hint = (
            f"did you mean `{close[0]}`?"
            if close
            else f"allowed keys: {', '.join(sorted(allowed))}"
        )
        return f"unknown key `{name}`", hint
    if kind == "missing":
        return f"missing required key `{name}`", f"add `{name}: ...`"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return "unknown or missing step `kind`", f"write `kind:` one of {', '.join(STEP_KINDS)}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"`{err.get('input')}` is not allowed here", f"write one of {expected}"
    if kind == "string_pattern_mismatch":
        if err["loc"][-1] == "[key]":
            return (
                f"`{err.get('input')}` is not a valid step name",
                "use lower_case letters, digits and _, starting with a letter",
            )
        if name == "key":
            return f"`{err.get('input')}` is not a phone key", "write one key: 0-9, * or #"
        if name in _STEP_REFS or (len(path) == 2 and path[0] == "steps"):
            return (
                f"`{err.get('input')}` is not a valid step name",
                "use lower_case letters, digits and _, starting with a letter",
            )
    return err["msg"], ""


def _queue_hint(
    kind: str, err: dict[str, Any], path: tuple[str | int, ...], data: dict[str, Any]
) -> tuple[str, str] | None:
    """What to write instead, for the keys of a queue declaration and the old `requires:` on
    an enqueue step (a requirement now lives once, under `queues:`)."""
    if kind == "extra_forbidden" and len(path) == 3 and path[0] == "steps":
        step = data.get("steps", {}).get(path[1])
        if path[2] == "requires" and isinstance(step, dict) and step.get("kind") == "enqueue":
            queue = step.get("queue", "<queue>")
            return (
                "`requires:` no longer goes on an enqueue step",
                f"declare it once under `queues:`, e.g. `queues: {{{queue}: "
                f"{{requires: {step.get('requires', 'one_factor')}, roles: [agent]}}}}`",
            )
    if not path or path[0] != "queues":
        return None
    if kind == "string_pattern_mismatch" and err["loc"][-1] == "[key]":
        return (
            f"`{err.get('input')}` is not a valid queue name",
            "use letters, digits and . _ : -",
        )
    unauthenticated = err.get("input") in ("none", "identified")
    if kind == "literal_error" and len(path) == 3 and path[2] in _QUEUE_LEVELS and unauthenticated:
        return (
            f"queue `{path[1]}` would let a caller reach an agent unauthenticated",
            f"write `{path[2]}: one_factor` or `{path[2]}: two_factor`",
        )
    return None


_QUEUE_LEVELS = ("requires", "unattested_requires")


def _allowed_keys(path: tuple[str | int, ...], data: dict[str, Any]) -> list[str]:
    from ivr.flows import schema

    if not path:
        return list(schema.Flow.model_fields)
    if path == ("authentication",):
        return list(schema.AuthenticationPolicy.model_fields)
    if len(path) == 2 and path[0] == "queues":
        return list(schema.Queue.model_fields)
    if len(path) == 2 and path[0] == "steps":
        step = data.get("steps", {}).get(path[1], {})
        model = _STEP_MODELS.get(step.get("kind")) if isinstance(step, dict) else None
        return list(model.model_fields) if model else ["kind"]
    if len(path) == 4 and path[0] == "steps" and path[2] == "choices":
        return list(schema.Choice.model_fields)
    return []


def _step_models() -> dict[str, Any]:
    from ivr.flows import schema

    models = (
        schema.SayStep,
        schema.GotoStep,
        schema.HangupStep,
        schema.MenuStep,
        schema.IdentifyStep,
        schema.AuthenticateStep,
        schema.EnqueueStep,
    )
    return {m.model_fields["kind"].annotation.__args__[0]: m for m in models}


_STEP_MODELS = _step_models()
