"""Read flow YAML into :class:`~ivr.flows.model.Flow`, turning every mistake into ``file:line: field: ...``.

PyYAML's composer keeps the start mark of every node; we index key and value nodes by their path, validate
the constructed data with pydantic, and map each error's ``loc`` back through that index. Pydantic's
wording is written for programmers ("Input should be a valid dictionary or instance of ModelSettings"),
so the common error types are reworded for the person editing the file, with "did you mean" hints for
misspelt keys and choices.
"""

from __future__ import annotations

import datetime as dt
import re
import reprlib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from inspect import isclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from ivr.flows.errors import FlowError, Problem
from ivr.flows.model import ISSUES_CONTEXT_KEY, Flow, Issue, did_you_mean, dotted

Path_ = tuple[str | int, ...]


@dataclass
class Document:
    """A parsed YAML file: its text and, per field path, the nodes that hold the key and the value."""

    source: str
    text: str
    keys: dict[tuple[str, ...], yaml.Node] = field(default_factory=dict)
    values: dict[tuple[str, ...], yaml.Node] = field(default_factory=dict)

    def line(self, path: Path_, needle: str | None = None) -> int:
        """Line (1-based) of the deepest known part of ``path``; of ``needle`` inside its value if given."""
        parts = tuple(str(p) for p in path)
        if needle is not None and parts in self.values:
            node = self.values[parts]
            raw = self.text[node.start_mark.index : node.end_mark.index]
            at = raw.find(needle)
            if at != -1:
                return node.start_mark.line + raw.count("\n", 0, at) + 1
        while parts:
            if parts in self.keys:
                return self.keys[parts].start_mark.line + 1
            parts = parts[:-1]
        return 1


@dataclass(frozen=True)
class LoadedFlow:
    """A flow read from a file, with the document needed to point at its lines later."""

    flow: Flow
    document: Document
    #: Problems that do not stop the flow from loading (e.g. an unreachable stage), by line.
    warnings: tuple[Problem, ...] = ()


def parse_flow(text: str, source: str) -> LoadedFlow:
    """Validate one flow document; raises :class:`FlowError` listing every problem in it."""
    problems: list[Problem] = []
    document = Document(source, text)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _index(node, (), document, problems, set())
                _check_alias_expansion(node, source)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise FlowError([_syntax_problem(exc, source)]) from None
    except yaml.YAMLError as exc:
        raise FlowError([Problem(source, None, "", f"YAML error: {exc}")]) from None

    if data is None:
        raise FlowError(
            [
                Problem(
                    source, 1, "", "the file is empty (expected a mapping with at least id and instructions)"
                )
            ]
        )
    if not isinstance(data, dict):
        raise FlowError(
            [
                Problem(
                    source,
                    1,
                    "",
                    f"the top level is {_kind(data)}, expected a mapping (id: ..., instructions: ...)",
                )
            ]
        )

    issues: list[Issue] = []
    try:
        flow = Flow.model_validate(data, context={ISSUES_CONTEXT_KEY: issues})
    except ValidationError as exc:
        problems.extend(_translate(exc, data, document))
        raise FlowError(_by_line(problems)) from None
    located = [
        (
            issue.severity,
            Problem(source, document.line(issue.path, issue.needle), dotted(issue.path), issue.message),
        )
        for issue in issues
    ]
    problems.extend(problem for severity, problem in located if severity == "error")
    if problems:
        raise FlowError(_by_line(problems))
    warnings = _by_line([problem for severity, problem in located if severity == "warning"])
    return LoadedFlow(flow, document, tuple(warnings))


def _by_line(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: p.line or 0)


def load_flow(path: Path) -> LoadedFlow:
    """Read and validate one flow file."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FlowError(
            [Problem(source, None, "", f"is not UTF-8 text ({exc.reason} at byte {exc.start})")]
        ) from None
    except OSError as exc:
        raise FlowError([Problem(source, None, "", f"cannot be read ({exc.strerror or exc})")]) from None
    return parse_flow(text, source)


def flow_files(folder: Path) -> list[Path]:
    """The ``*.yaml`` and ``*.yml`` files directly in ``folder``, by name; hidden files are skipped."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix in {".yaml", ".yml"} and not p.name.startswith(".") and p.is_file()
    )


# --- YAML side -------------------------------------------------------------------------------------------


def _syntax_problem(exc: yaml.MarkedYAMLError, source: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    what = exc.problem or "invalid YAML"
    if exc.context and exc.context_mark is not None:
        what += f" ({exc.context} at line {exc.context_mark.line + 1})"
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return Problem(source, line, "", f"YAML syntax error: {what}", column)


#: Most values a document may hold once its aliases are expanded (the shipped flows hold well under 2,000).
MAX_EXPANDED_VALUES = 100_000


def _check_alias_expansion(root: yaml.Node, source: str) -> None:
    """Refuse a document whose aliases expand it past :data:`MAX_EXPANDED_VALUES` values.

    PyYAML keeps aliases as shared references, so loading stays cheap, but the flow's data is serialised in
    full later (tool parameters go into every call's ``session.update``): nested aliases can turn a few
    hundred bytes into gigabytes. The problem points at the smallest node that is too big on its own.
    """
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        sizes[key] = 1  # a recursive alias counts once (it cannot be expanded at all)
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        sizes[key] = total
        return total

    if size(root) <= MAX_EXPANDED_VALUES:
        return
    node = root
    while True:
        children = (
            [v for _, v in node.value]
            if isinstance(node, yaml.MappingNode)
            else node.value
            if isinstance(node, yaml.SequenceNode)
            else []
        )
        bigger = next(
            (c for c in children if sizes.get(id(c), 0) > MAX_EXPANDED_VALUES and c is not node), None
        )
        if bigger is None:
            break
        node = bigger
    raise FlowError(
        [
            Problem(
                source,
                node.start_mark.line + 1,
                "",
                f"YAML aliases expand this flow to {sizes[id(root)]:,} values (at most "
                f"{MAX_EXPANDED_VALUES:,}), mostly through the node here; "
                "repeat less through aliases (*name)",
            )
        ]
    )


def _index(node: yaml.Node, path: Path_, document: Document, problems: list[Problem], seen: set[int]) -> None:
    """Record key/value nodes by path and report duplicate keys (PyYAML silently keeps the last one).

    A node reached again through an alias is not walked twice: aliases can be recursive or nest into
    exponentially large data, and the anchor's own lines are the right ones to report anyway.
    """
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *anchor" — merged keys keep the anchor's lines
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            child = (*path, key)
            line = key_node.start_mark.line + 1
            if key in first_seen:
                problems.append(
                    Problem(
                        document.source,
                        line,
                        dotted(child),
                        f"duplicate key (first given at line {first_seen[key]}; remove one of them)",
                    )
                )
                continue
            first_seen[key] = line
            document.keys[tuple(str(p) for p in child)] = key_node
            document.values[tuple(str(p) for p in child)] = value_node
            _index(value_node, child, document, problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            document.keys[tuple(str(p) for p in child)] = item
            document.values[tuple(str(p) for p in child)] = item
            _index(item, child, document, problems, seen)


# --- pydantic side ---------------------------------------------------------------------------------------

_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}


def _translate(exc: ValidationError, data: dict[str, Any], document: Document) -> Iterator[Problem]:
    for error in exc.errors(include_url=False):
        found, rest = _resolve(error["loc"], data)
        kind = error["type"]
        where = document.line(found)
        name = dotted(found + rest)
        value = error.get("input")
        ctx = error.get("ctx") or {}

        if kind == "missing":
            described = _field_description(found, rest, data)
            message = f"required field is missing ({described or 'add it'})"
        elif kind == "extra_forbidden":
            unknown = str(found[-1]) if found else ""
            allowed = _allowed_keys(found[:-1], data)
            hint = did_you_mean(unknown, allowed) or _other_type_hint(found[:-1], unknown, data)
            message = "unknown key" + (hint or (f" (allowed keys: {', '.join(allowed)})" if allowed else ""))
        elif kind == "union_tag_invalid":
            tag_path = (*found, "type")
            where, name = document.line(tag_path), dotted(tag_path)
            tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
            hint = did_you_mean(str(ctx.get("tag")), tags).strip()
            message = (
                f"unknown type {ctx.get('tag')!r}"
                + (f" {hint}" if hint else "")
                + f" (use one of: {', '.join(tags)})"
            )
        elif kind == "union_tag_not_found":
            tags = _union_tags(found, data)
            message = "missing 'type'" + (f" (use one of: {', '.join(tags)})" if tags else "")
        elif kind == "literal_error":
            options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            hint = did_you_mean(str(value), options).strip(" ()")
            message = (
                f"{value!r} is not allowed ("
                + (f"{hint} " if hint else "")
                + f"use one of: {', '.join(options)})"
            )
        elif kind in _EXPECTED:
            if kind == "model_attributes_type" and _union_tags(found, data):
                expected = f"a mapping with a type (e.g. {{type: {_union_tags(found, data)[0]}}})"
            else:
                expected = _EXPECTED[kind]
            if value is None:
                message = f"no value given (expected {expected})"
            else:
                message = f"{_show(value)} is {_kind(value)}, expected {expected}"
        elif kind == "value_error":
            message = str(ctx.get("error") or error["msg"])
        else:
            message = f"{error['msg']} (got {_show(value)})"
        yield Problem(document.source, where, name, message)


def _resolve(loc: tuple[str | int, ...], data: Any) -> tuple[Path_, Path_]:
    """Split a pydantic ``loc`` into the part that exists in the data and the rest (missing fields).

    Discriminated unions add the tag to ``loc`` (``tools.0.end_call.name``) and dict keys add
    ``[key]``; neither is in the file, so both are skipped.
    """
    found: list[str | int] = []
    current = data
    parts = list(loc)
    while parts:
        part = parts[0]
        if part == "[key]":
            parts.pop(0)
            continue
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            current = current[part]
        elif isinstance(current, dict) and current.get("type") == part:
            parts.pop(0)
            continue
        else:
            break
        found.append(part)
        parts.pop(0)
    return tuple(found), tuple(p for p in parts if p != "[key]")


def _child(value: Any, part: str | int) -> Any:
    if isinstance(value, dict):
        return value.get(part)
    if isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
        return value[part]
    return None


def _strip(annotation: Any) -> Any:
    """Drop ``Annotated`` wrappers and ``| None``."""
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _members(annotation: Any) -> list[type[BaseModel]]:
    annotation = _strip(annotation)
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return [
            m for m in (_strip(a) for a in get_args(annotation)) if isclass(m) and issubclass(m, BaseModel)
        ]
    return []


def _tag(model: type[BaseModel]) -> str | None:
    info = model.model_fields.get("type")
    if info is None or get_origin(info.annotation) is not Literal:
        return None
    return str(get_args(info.annotation)[0])


def _pick(annotation: Any, value: Any) -> Any:
    """The concrete type a value has at a spot: for a tagged union, the member its ``type`` selects."""
    annotation = _strip(annotation)
    members = _members(annotation)
    if members and isinstance(value, dict):
        for member in members:
            if _tag(member) == value.get("type"):
                return member
    return annotation


def _annotation_at(path: Path_, data: Any, *, pick: bool = True) -> Any:
    annotation: Any = Flow
    current = data
    for part in path:
        annotation = _pick(annotation, current)
        if isclass(annotation) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(str(part))
            if info is None:
                return None
            annotation = info.annotation
        elif get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return None
        current = _child(current, part)
    return _pick(annotation, current) if pick else annotation


def _allowed_keys(path: Path_, data: Any) -> list[str]:
    model = _annotation_at(path, data)
    if isclass(model) and issubclass(model, BaseModel):
        return [info.alias or name for name, info in model.model_fields.items()]  # a step's "as" is as_
    return []


def _union_tags(path: Path_, data: Any) -> list[str]:
    """The ``type`` values allowed at ``path`` when a tagged union lives there."""
    annotation = _annotation_at(path, data)
    members = _members(annotation) if annotation is not None else []
    return [t for t in (_tag(m) for m in members) if t]


def _other_type_hint(path: Path_, key: str, data: Any) -> str:
    """`` (eagerness belongs to type semantic_vad)`` when another member of a tagged union has ``key``."""
    declared = _annotation_at(path, data, pick=False)
    owners = [t for m in _members(declared) if key in m.model_fields and (t := _tag(m))] if declared else []
    return f" ({key} belongs to type {' or '.join(owners)})" if owners else ""


def _field_description(found: Path_, rest: Path_, data: Any) -> str | None:
    if not rest:
        return None
    model = _annotation_at(found, data)
    if isclass(model) and issubclass(model, BaseModel):
        info = model.model_fields.get(str(rest[0]))
        if info is not None:
            return info.description
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, dt.date | dt.datetime):
        return "a date"
    return type(value).__name__


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring = 2, 4, 4, 50


def _show(value: Any) -> str:
    """A short repr: values can be huge (or cyclic) when YAML aliases are involved."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
