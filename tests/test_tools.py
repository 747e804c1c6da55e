"""Tool registry dispatch (every error path), the built-in tools and their effect on the call."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from openai.types.beta.realtime.session_update_event import SessionTool
from openai.types.realtime import RealtimeFunctionTool

from ivr.flows import Flow
from ivr.tools.builtin import EndCall, TransferToHuman, build_tool
from ivr.tools.registry import ToolContext, ToolError, ToolRegistry, ToolSpec, registry_for_flow

CALLER = "+15550104242"


@dataclass
class RecordingCall:
    """A CallControl that remembers what tools asked for."""

    hangups: list[str] = field(default_factory=list)
    transfers: list[tuple[str, str | None]] = field(default_factory=list)

    def request_hangup(self, reason: str) -> None:
        self.hangups.append(reason)

    def request_transfer(self, number: str, announcement: str | None) -> None:
        self.transfers.append((number, announcement))


BOOKING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "party_size": {"type": "integer", "minimum": 1, "maximum": 12},
        "notes": {"type": "string"},
    },
    "required": ["date", "party_size"],
    "additionalProperties": False,
}


class Booking:
    """A small real tool: echoes its arguments back."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.spec = ToolSpec("book_table", "Book a table.", BOOKING_SCHEMA, timeout_s=timeout_s)
        self.calls: list[dict[str, Any]] = []

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        self.calls.append(args)
        return {"booked": True, "date": args["date"], "party_size": args["party_size"]}


class Stuck:
    """Never finishes on its own; records that it started and that it was cancelled."""

    def __init__(self, timeout_s: float) -> None:
        self.spec = ToolSpec("lookup", "Look something up.", {"type": "object"}, timeout_s=timeout_s)
        self.started = asyncio.Event()
        self.cancelled = False

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return {}


class Raising:
    def __init__(self, exc: Exception) -> None:
        self.spec = ToolSpec("crm", "Query the CRM.", {"type": "object"})
        self.exc = exc

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        raise self.exc


class Returning:
    def __init__(self, value: Any) -> None:
        self.spec = ToolSpec("odd", "Returns odd things.", {"type": "object"})
        self.value = value

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        return self.value


def make_flow(**fields: Any) -> Flow:
    return Flow.model_validate({"id": "test", "instructions": "hi", **fields})


def make_ctx(flow: Flow | None = None) -> tuple[ToolContext, RecordingCall]:
    call = RecordingCall()
    return ToolContext(call_sid="CA123", flow=flow or make_flow(), call=call, caller_number=CALLER), call


def error_of(output: str) -> dict[str, str]:
    payload = json.loads(output)
    assert set(payload) == {"error"}
    return payload["error"]


# --- dispatch ------------------------------------------------------------------------------------------


async def test_good_call_returns_json_output_and_timing() -> None:
    registry = ToolRegistry()
    booking = Booking()
    registry.register(booking)
    ctx, _ = make_ctx()
    outcome = await registry.dispatch("book_table", '{"date": "2026-05-01", "party_size": 4}', "call_1", ctx)
    assert outcome.ok and outcome.error_type is None
    assert (outcome.name, outcome.call_id) == ("book_table", "call_1")
    assert json.loads(outcome.output) == {"booked": True, "date": "2026-05-01", "party_size": 4}
    assert outcome.arguments == {"date": "2026-05-01", "party_size": 4}
    assert outcome.duration_ms > 0
    assert booking.calls == [{"date": "2026-05-01", "party_size": 4}]


async def test_unknown_tool() -> None:
    registry = ToolRegistry()
    registry.register(Booking())
    registry.register(EndCall())
    ctx, _ = make_ctx()
    outcome = await registry.dispatch("x", "{}", "call_1", ctx)
    assert not outcome.ok and outcome.error_type == "unknown_tool" and outcome.arguments is None
    assert json.loads(outcome.output) == {
        "error": {"type": "unknown_tool", "message": "No tool named 'x'. Available: book_table, end_call."}
    }


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            "{date: 1}",
            "Arguments for 'book_table' are not valid JSON "
            "(Expecting property name enclosed in double quotes at line 1 column 2)",
        ),
        ("[1, 2]", "Arguments for 'book_table' must be a JSON object, got an array"),
        ('"hello"', "Arguments for 'book_table' must be a JSON object, got a string"),
        ("null", "Arguments for 'book_table' must be a JSON object, got null"),
    ],
)
async def test_arguments_that_are_not_a_json_object(arguments: str, expected: str) -> None:
    registry = ToolRegistry()
    booking = Booking()
    registry.register(booking)
    ctx, _ = make_ctx()
    outcome = await registry.dispatch("book_table", arguments, "call_1", ctx)
    assert outcome.error_type == "invalid_arguments" and not outcome.ok and outcome.arguments is None
    assert error_of(outcome.output) == {
        "type": "invalid_arguments",
        "message": expected + ". Call it again with a JSON object.",
    }
    assert booking.calls == []


async def test_schema_violations_name_each_field() -> None:
    registry = ToolRegistry()
    booking = Booking()
    registry.register(booking)
    ctx, _ = make_ctx()
    outcome = await registry.dispatch(
        "book_table", '{"date": "tomorrow", "party_size": "four", "colour": "red"}', "call_1", ctx
    )
    assert outcome.error_type == "invalid_arguments"
    assert outcome.arguments == {"date": "tomorrow", "party_size": "four", "colour": "red"}
    message = error_of(outcome.output)["message"]
    assert message == (
        "Arguments for 'book_table' do not match its parameters: "
        "$: Additional properties are not allowed ('colour' was unexpected); "
        "$.date: 'tomorrow' does not match '^\\\\d{4}-\\\\d{2}-\\\\d{2}$'; "
        "$.party_size: 'four' is not of type 'integer'. Fix them and call it again."
    )
    assert booking.calls == []


async def test_missing_required_argument_is_named() -> None:
    registry = ToolRegistry()
    registry.register(Booking())
    ctx, _ = make_ctx()
    outcome = await registry.dispatch("book_table", '{"date": "2026-05-01"}', "call_1", ctx)
    assert "$: 'party_size' is a required property" in error_of(outcome.output)["message"]


async def test_empty_arguments_mean_an_empty_object() -> None:
    registry = ToolRegistry()
    registry.register(EndCall())
    ctx, call = make_ctx()
    outcome = await registry.dispatch("end_call", "", "call_1", ctx)
    assert outcome.ok and outcome.arguments == {}
    assert call.hangups == ["ended by the assistant"]


async def test_timeout_cancels_the_tool() -> None:
    registry = ToolRegistry()
    stuck = Stuck(timeout_s=0.05)
    registry.register(stuck)
    ctx, _ = make_ctx()
    outcome = await registry.dispatch("lookup", "{}", "call_1", ctx)
    assert stuck.started.is_set() and stuck.cancelled
    assert outcome.error_type == "timeout" and not outcome.ok
    assert error_of(outcome.output) == {
        "type": "timeout",
        "message": "'lookup' did not finish within 0.05 seconds. "
        "Tell the caller it could not be done right now and offer something else.",
    }
    assert outcome.duration_ms >= 50


async def test_cancelling_the_call_propagates() -> None:
    registry = ToolRegistry()
    stuck = Stuck(timeout_s=60)
    registry.register(stuck)
    ctx, _ = make_ctx()
    task = asyncio.create_task(registry.dispatch("lookup", "{}", "call_1", ctx))
    await asyncio.wait_for(stuck.started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stuck.cancelled


async def test_exception_becomes_tool_failed_without_details(caplog: pytest.LogCaptureFixture) -> None:
    registry = ToolRegistry()
    registry.register(Raising(RuntimeError("connect to postgres://admin:hunter2@db failed")))
    ctx, _ = make_ctx()
    with caplog.at_level(logging.INFO, logger="ivr.tools"):
        outcome = await registry.dispatch("crm", '{"phone": "' + CALLER + '"}', "call_1", ctx)
    assert outcome.error_type == "tool_failed" and not outcome.ok
    assert error_of(outcome.output) == {
        "type": "tool_failed",
        "message": "'crm' failed unexpectedly (RuntimeError). "
        "Apologise to the caller and offer another way to help.",
    }
    assert "hunter2" not in outcome.output and "Traceback" not in outcome.output
    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 1 and "hunter2" in str(failures[0].exc_info[1])
    assert CALLER not in caplog.text  # arguments are not logged


async def test_tool_error_is_passed_to_the_model() -> None:
    registry = ToolRegistry()
    registry.register(Raising(ToolError("fully_booked", "No table is free at 8 pm; offer 9 pm instead.")))
    ctx, _ = make_ctx()
    outcome = await registry.dispatch("crm", "{}", "call_1", ctx)
    assert outcome.error_type == "fully_booked"
    assert error_of(outcome.output) == {
        "type": "fully_booked",
        "message": "No table is free at 8 pm; offer 9 pm instead.",
    }


@pytest.mark.parametrize("value", [["not", "a", "dict"], {"when": object()}])
async def test_unusable_results_become_tool_failed(value: Any) -> None:
    registry = ToolRegistry()
    registry.register(Returning(value))
    ctx, _ = make_ctx()
    outcome = await registry.dispatch("odd", "{}", "call_1", ctx)
    assert outcome.error_type == "tool_failed"
    assert "returned an unusable result" in error_of(outcome.output)["message"]


async def test_concurrent_dispatches_are_independent() -> None:
    registry = ToolRegistry()
    booking = Booking()
    registry.register(booking)
    ctx, _ = make_ctx()
    outcomes = await asyncio.gather(
        *(
            registry.dispatch("book_table", json.dumps({"date": "2026-05-01", "party_size": n}), f"c{n}", ctx)
            for n in range(1, 6)
        )
    )
    assert [json.loads(o.output)["party_size"] for o in outcomes] == [1, 2, 3, 4, 5]
    assert [o.call_id for o in outcomes] == ["c1", "c2", "c3", "c4", "c5"]


# --- registration ----------------------------------------------------------------------------------------


def test_register_rejects_bad_tools() -> None:
    registry = ToolRegistry()
    registry.register(EndCall())
    with pytest.raises(ValueError, match="a tool named 'end_call' is already registered"):
        registry.register(EndCall())
    with pytest.raises(ValueError, match="tool name 'bad name' is invalid"):
        registry.register(EndCall(name="bad name"))
    bad_schema = Booking()
    bad_schema.spec = ToolSpec("x", "d", {"type": "object", "properties": {"a": {"type": "strin"}}})
    with pytest.raises(ValueError, match="tool 'x': parameters are not a valid JSON Schema"):
        registry.register(bad_schema)
    not_object = Booking()
    not_object.spec = ToolSpec("y", "d", {"type": "string"})
    with pytest.raises(ValueError, match="parameters must be a JSON Schema with type 'object'"):
        registry.register(not_object)
    assert registry.names() == ["end_call"]


def test_realtime_tools_match_both_sdk_dialects() -> None:
    registry = ToolRegistry()
    registry.register(Booking())
    registry.register(EndCall())
    tools = registry.realtime_tools()
    assert [t["name"] for t in tools] == ["book_table", "end_call"]
    assert tools[0] == {
        "type": "function",
        "name": "book_table",
        "description": "Book a table.",
        "parameters": BOOKING_SCHEMA,
    }
    for tool in tools:
        for model in (RealtimeFunctionTool, SessionTool):
            parsed = model.model_validate(tool, strict=True)
            assert set(tool) <= set(model.model_fields)
            assert parsed.model_dump(exclude_none=True) == tool


# --- built-in tools --------------------------------------------------------------------------------------


def test_registry_for_flow_builds_the_declared_tools() -> None:
    flow = make_flow(
        transfer={"number": "+15550009999"},
        tools=[
            {"type": "transfer_to_human", "name": "front_desk", "description": "To the desk."},
            {"type": "end_call"},
        ],
    )
    registry = registry_for_flow(flow)
    assert registry.names() == ["front_desk", "end_call"]
    front_desk = registry.realtime_tools()[0]
    assert front_desk["description"] == "To the desk."
    assert front_desk["parameters"]["properties"]["reason"]["type"] == "string"


async def test_end_call_requests_hangup() -> None:
    flow = make_flow(tools=[{"type": "end_call"}])
    ctx, call = make_ctx(flow)
    outcome = await registry_for_flow(flow).dispatch(
        "end_call", '{"reason": "caller said goodbye"}', "c1", ctx
    )
    assert outcome.ok
    assert json.loads(outcome.output) == {
        "status": "ending",
        "note": "Say a short goodbye now; the line will close after it plays.",
    }
    assert call.hangups == ["caller said goodbye"] and call.transfers == []


async def test_end_call_with_bad_arguments_does_not_hang_up() -> None:
    flow = make_flow(tools=[{"type": "end_call"}])
    ctx, call = make_ctx(flow)
    outcome = await registry_for_flow(flow).dispatch("end_call", '{"reason": 5}', "c1", ctx)
    assert outcome.error_type == "invalid_arguments"
    assert "$.reason: 5 is not of type 'string'" in error_of(outcome.output)["message"]
    assert call.hangups == []


async def test_transfer_uses_flow_number_and_announcement() -> None:
    flow = make_flow(
        transfer={"number": "+15550009999", "announcement": "Connecting you now."},
        tools=[{"type": "transfer_to_human"}],
    )
    ctx, call = make_ctx(flow)
    outcome = await registry_for_flow(flow).dispatch("transfer_to_human", "{}", "c1", ctx)
    assert outcome.ok and json.loads(outcome.output)["status"] == "transferring"
    assert call.transfers == [("+15550009999", "Connecting you now.")] and call.hangups == []


async def test_transfer_tool_number_overrides_the_flow() -> None:
    flow = make_flow(tools=[{"type": "transfer_to_human", "number": "+15550001111"}])
    ctx, call = make_ctx(flow)
    outcome = await registry_for_flow(flow).dispatch("transfer_to_human", '{"reason": "billing"}', "c1", ctx)
    assert outcome.ok
    assert "connecting them" in json.loads(outcome.output)["note"]
    assert call.transfers == [("+15550001111", None)]


async def test_transfer_without_any_number_is_a_structured_error() -> None:
    registry = ToolRegistry()
    registry.register(TransferToHuman())
    ctx, call = make_ctx(make_flow())
    outcome = await registry.dispatch("transfer_to_human", "{}", "c1", ctx)
    assert not outcome.ok and outcome.error_type == "transfer_unavailable"
    assert "Apologise" in error_of(outcome.output)["message"]
    assert call.transfers == []


def test_build_tool_knows_every_flow_tool_type() -> None:
    from ivr.flows.model import EndCallConfig, TransferToHumanConfig

    assert build_tool(EndCallConfig()).spec.name == "end_call"
    assert build_tool(TransferToHumanConfig(name="desk")).spec.name == "desk"
