"""Tools the model may call, and the one place their calls are checked and run.

The model's arguments arrive as JSON text that may be malformed, of the wrong shape or simply invented.
:meth:`ToolRegistry.dispatch` validates them against the tool's JSON Schema before any code runs, bounds
the run with a timeout, and turns every failure into a structured ``{"error": {"type", "message"}}``
output the model can read and recover from (apologise, ask again, offer something else). It never raises
for a bad call, so one broken tool cannot end a phone call; only cancellation of the call itself
propagates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ivr.flows.model import Flow

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ivr.store.keys import KeySchema

log = logging.getLogger(__name__)

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class ToolSpec:
    """What the model is told about a tool."""

    name: str
    description: str
    #: JSON Schema (Draft 2020-12) of the arguments object.
    parameters: dict[str, Any]
    timeout_s: float = 10.0


class CallControl(Protocol):
    """What a tool may ask of the live call; implemented by the call runtime."""

    def request_hangup(self, reason: str) -> None:
        """Hang up once the agent's current speech has played."""
        ...

    def request_transfer(self, number: str, announcement: str | None) -> None:
        """Transfer the caller to ``number``, saying ``announcement`` first if given."""
        ...


def utc_now() -> datetime:
    """The default clock of a :class:`ToolContext`."""
    return datetime.now(UTC)


@dataclass
class ToolContext:
    """The call a tool runs for, and the shared resources a tool may use.

    ``redis``/``keys`` are ``None`` when the deployment runs without Redis; tools that need them answer
    with a structured ``unavailable`` error (see :meth:`require_redis`). ``now`` is the clock (tests pass
    a fixed one). ``env`` is where ``${VAR}`` references of http tools are read; ``None`` means the
    process environment.
    """

    call_sid: str
    flow: Flow
    call: CallControl
    caller_number: str
    redis: Redis | None = None
    keys: KeySchema | None = None
    now: Callable[[], datetime] = utc_now
    env: Mapping[str, str] | None = None
    #: Lookup records this call found by the caller's own number ("dataset:key"): who the caller is,
    #: as far as the data says. Filled by the lookup tool; read by the booking tool's ownership check.
    verified_records: set[str] = field(default_factory=set)
    #: True while a tool runs because an operator approved this very call (see ``dispatch(approved=)``).
    approved: bool = False

    def require_redis(self, tool: str) -> tuple[Redis, KeySchema]:
        """The Redis client and key schema, or a :class:`ToolError` the model can act on."""
        if self.redis is None or self.keys is None:
            raise ToolError(
                "unavailable",
                f"{tool!r} cannot work right now (its data store is not configured). Tell the caller it "
                "cannot be done at the moment and offer to transfer them or take a message.",
            )
        return self.redis, self.keys


class Tool(Protocol):
    """A tool implementation: a spec and an async ``run`` returning a JSON-serialisable object."""

    spec: ToolSpec

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]: ...


class ToolError(Exception):
    """Raise from ``Tool.run`` to send the model a specific, actionable error instead of ``tool_failed``."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one dispatched call, ready to send back as ``function_call_output``."""

    name: str
    call_id: str
    ok: bool
    #: JSON text for ``function_call_output.output``.
    output: str
    #: ``None`` on success; else unknown_tool, invalid_arguments, timeout, tool_failed or a ToolError type.
    error_type: str | None
    duration_ms: float
    #: The parsed arguments when they were a JSON object, else ``None``.
    arguments: dict[str, Any] | None


@dataclass
class _Registered:
    tool: Tool
    validator: Draft202012Validator = field(repr=False)


#: Runs between validation and execution; returns ``(result for the model, error type)`` to stop the tool.
class Approved:
    """What a guard returns to let a tool run *because an operator approved it* (``ctx.approved``)."""


#: The one :class:`Approved` value.
APPROVED = Approved()
#: Sees the validated arguments: ``None`` lets the tool run, :data:`APPROVED` lets it run as approved,
#: ``(payload, error_type)`` stops it with that output.
Guard = Callable[[dict[str, Any]], Awaitable[tuple[Any, str] | Approved | None]]


class ToolRegistry:
    """The tools of one flow, by name, in registration order."""

    def __init__(self) -> None:
        self._tools: dict[str, _Registered] = {}

    def register(self, tool: Tool) -> None:
        """Add a tool; raises :class:`ValueError` for a bad name, a duplicate or an invalid schema."""
        spec = tool.spec
        if not _TOOL_NAME.fullmatch(spec.name):
            raise ValueError(f"tool name {spec.name!r} is invalid (use 1-64 letters, digits, '_' or '-')")
        if spec.name in self._tools:
            raise ValueError(f"a tool named {spec.name!r} is already registered")
        if spec.parameters.get("type") != "object":
            raise ValueError(f"tool {spec.name!r}: parameters must be a JSON Schema with type 'object'")
        if not spec.timeout_s > 0:
            raise ValueError(f"tool {spec.name!r}: timeout_s must be positive, got {spec.timeout_s}")
        try:
            Draft202012Validator.check_schema(spec.parameters)
        except SchemaError as exc:
            raise ValueError(
                f"tool {spec.name!r}: parameters are not a valid JSON Schema: {exc.message}"
            ) from None
        self._tools[spec.name] = _Registered(tool, Draft202012Validator(spec.parameters))

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        registered = self._tools.get(name)
        return registered.tool if registered else None

    def realtime_tools(self) -> list[dict[str, Any]]:
        """The ``tools`` list for a Realtime ``session.update`` (same shape in the GA and beta dialects)."""
        return [
            {
                "type": "function",
                "name": r.tool.spec.name,
                "description": r.tool.spec.description,
                "parameters": r.tool.spec.parameters,
            }
            for r in self._tools.values()
        ]

    async def dispatch(
        self,
        name: str,
        arguments_json: str,
        call_id: str,
        ctx: ToolContext,
        guard: Guard | None = None,
        *,
        approved: bool = False,
    ) -> ToolOutcome:
        """Validate and run one function call from the model. Never raises except on cancellation.

        ``guard`` sees the validated arguments before the tool runs and may stop it by returning the
        result the model gets instead, with its error type (the stage check and the approval gate).
        ``approved`` says an operator approved this call: the tool sees ``ctx.approved`` (the booking
        tool then lets a caller change a booking made from another number).
        """
        started = time.perf_counter()

        def done(
            ok: bool, payload: Any, error_type: str | None, arguments: dict[str, Any] | None
        ) -> ToolOutcome:
            output = orjson.dumps(payload).decode()  # may raise for a tool's result; checked by the caller
            duration_ms = (time.perf_counter() - started) * 1000.0
            log.info(
                "tool %s call_id=%s call=%s ok=%s error=%s %.1f ms",
                name,
                call_id,
                ctx.call_sid,
                ok,
                error_type,
                duration_ms,
            )
            return ToolOutcome(name, call_id, ok, output, error_type, duration_ms, arguments)

        def failure(error_type: str, message: str, arguments: dict[str, Any] | None = None) -> ToolOutcome:
            return done(False, {"error": {"type": error_type, "message": message}}, error_type, arguments)

        registered = self._tools.get(name)
        if registered is None:
            available = ", ".join(self._tools) or "none"
            return failure("unknown_tool", f"No tool named {name!r}. Available: {available}.")
        spec = registered.tool.spec

        arguments = _parse_arguments(arguments_json)
        if isinstance(arguments, str):
            return failure(
                "invalid_arguments", f"Arguments for {name!r} {arguments}. Call it again with a JSON object."
            )
        errors = sorted(registered.validator.iter_errors(arguments), key=lambda e: e.json_path)
        if errors:
            details = "; ".join(f"{e.json_path}: {_short(e.message)}" for e in errors[:_MAX_ERRORS_SHOWN])
            if len(errors) > _MAX_ERRORS_SHOWN:
                details += f"; and {len(errors) - _MAX_ERRORS_SHOWN} more"
            return failure(
                "invalid_arguments",
                f"Arguments for {name!r} do not match its parameters: {details}. Fix them and call it again.",
                arguments,
            )

        if guard is not None:
            blocked = await guard(arguments)
            if isinstance(blocked, Approved):
                approved = True
            elif blocked is not None:
                payload, error_type = blocked
                return done(False, payload, error_type, arguments)

        try:
            run_ctx = replace(ctx, approved=True) if approved and not ctx.approved else ctx
            async with asyncio.timeout(spec.timeout_s):
                result = await registered.tool.run(arguments, run_ctx)
        except TimeoutError:
            return failure(
                "timeout",
                f"{name!r} did not finish within {spec.timeout_s:g} seconds. Tell the caller it could not be "
                "done right now and offer something else.",
                arguments,
            )
        except ToolError as exc:
            return failure(exc.error_type, exc.message, arguments)
        except Exception as exc:
            log.exception("tool %s failed (call_id=%s call=%s)", name, call_id, ctx.call_sid)
            return failure(
                "tool_failed",
                f"{name!r} failed unexpectedly ({type(exc).__name__}). Apologise to the caller and offer "
                "another way to help.",
                arguments,
            )

        if not isinstance(result, Mapping):
            log.error("tool %s returned %s, expected a dict", name, type(result).__name__)
            return failure(
                "tool_failed",
                f"{name!r} returned an unusable result. Apologise and offer another way to help.",
                arguments,
            )
        try:
            return done(True, dict(result), None, arguments)
        except orjson.JSONEncodeError as exc:
            log.error("tool %s returned a result that is not JSON-serialisable: %s", name, exc)
            return failure(
                "tool_failed",
                f"{name!r} returned an unusable result. Apologise and offer another way to help.",
                arguments,
            )


class _NonFinite:
    """Stands in for a number JSON cannot hold (``NaN``, ``Infinity``, ``1e999``) until it is reported."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _finite_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _non_finite_paths(value: Any, path: str = "$") -> list[str]:
    """``$.items[1].price (NaN)`` for every non-finite number inside ``value``, in document order."""
    if isinstance(value, _NonFinite):
        return [f"{path} ({value.text})"]
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _non_finite_paths(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _non_finite_paths(item, f"{path}[{index}]")
    return found


#: Deepest nesting of objects and arrays accepted in a tool's arguments.
MAX_ARGUMENT_DEPTH = 32


def _depth_over(value: Any, limit: int) -> bool:
    """True when ``value`` nests objects/arrays more than ``limit`` levels deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _parse_arguments(text: str) -> dict[str, Any] | str:
    """The arguments object, or a phrase saying why it is unusable ("are not valid JSON (...)").

    Python's parser accepts ``NaN``/``Infinity``/``-Infinity`` (not JSON) and turns ``1e999`` into
    infinity; such values would pass JSON-Schema ``number`` checks and compare false with everything,
    so they are refused here, naming where they are.
    """
    if not text.strip():
        return {}  # some models send "" for a tool without parameters
    try:
        value = json.loads(text, parse_constant=_NonFinite, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        return f"are not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    except RecursionError:
        return "are nested too deeply"
    except ValueError as exc:  # e.g. an integer literal past Python's digit limit (not a JSONDecodeError)
        return f"are not usable JSON ({exc})"
    if not isinstance(value, dict):
        return f"must be a JSON object, got {_json_kind(value)}"
    if _depth_over(value, MAX_ARGUMENT_DEPTH):
        # Records, events, redaction and JSON encoding all walk the arguments: keep them shallow.
        return f"are nested too deeply (more than {MAX_ARGUMENT_DEPTH} levels)"
    try:
        bad = _non_finite_paths(value)
    except RecursionError:
        return "are nested too deeply"
    if bad:
        shown = ", ".join(bad[:_MAX_ERRORS_SHOWN])
        if len(bad) > _MAX_ERRORS_SHOWN:
            shown += f" and {len(bad) - _MAX_ERRORS_SHOWN} more"
        return f"hold numbers that are not finite at {shown}; JSON numbers must be finite (use a real number)"
    return value


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, _NonFinite):
        return f"{value.text} (not a finite number)"
    return "an array"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def registry_for_flow(flow: Flow) -> ToolRegistry:
    """A registry holding the tools declared in ``flow.tools``, built from their ``type``, followed by the
    move-only tools its stage transitions create (which stage each one allows is :class:`FlowState`'s job).
    """
    from ivr.tools.builtin import StageTransition, build_tool  # builtin.py imports this module's types

    registry = ToolRegistry()
    for config in flow.tools:
        registry.register(build_tool(config))
    for name, description in flow.transition_tools().items():
        registry.register(StageTransition(name, description))
    return registry
