"""Tool arguments the model sends: non-finite numbers are refused; approval conditions fail closed.

Issue 9, finding 10: ``NaN``/``Infinity`` are not JSON, yet Python's parser accepts them, they pass
JSON-Schema ``number`` checks and they make ``amount > 100`` false; a condition over a field the model
left out must require approval rather than wave the call through.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ivr.approvals.policy import ApprovalPolicy
from ivr.flows import Flow
from ivr.tools.registry import ToolContext, ToolRegistry, ToolSpec

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "amount": {"type": "number", "minimum": 0},
        "currency": {"type": "string"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"price": {"type": "number"}}}},
    },
    "required": ["amount"],
}


class Refund:
    """A real tool that records each run."""

    def __init__(self) -> None:
        self.spec = ToolSpec("refund", "Refund an amount.", SCHEMA)
        self.runs: list[dict[str, Any]] = []

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        self.runs.append(args)
        return {"refunded": args["amount"]}


class NoCall:
    def request_hangup(self, reason: str) -> None:
        raise AssertionError("no hang-up expected")

    def request_transfer(self, number: str, announcement: str | None) -> None:
        raise AssertionError("no transfer expected")


def ctx() -> ToolContext:
    flow = Flow.model_validate({"id": "shop", "instructions": "hi"})
    return ToolContext(call_sid="CA1", flow=flow, call=NoCall(), caller_number="+15550100000")


def when(condition: str) -> ApprovalPolicy:
    return ApprovalPolicy.model_validate({"required": "when", "when": condition})


@pytest.mark.parametrize(
    ("text", "where", "spelled"),
    [
        ('{"amount": NaN}', "$.amount", "NaN"),
        ('{"amount": Infinity}', "$.amount", "Infinity"),
        ('{"amount": -Infinity}', "$.amount", "-Infinity"),
        ('{"amount": 1e999}', "$.amount", "1e999"),
        ('{"amount": 5, "items": [{"price": 1}, {"price": NaN}]}', "$.items[1].price", "NaN"),
    ],
)
async def test_non_finite_numbers_are_refused_naming_the_field(text: str, where: str, spelled: str) -> None:
    registry = ToolRegistry()
    tool = Refund()
    registry.register(tool)
    guarded: list[dict[str, Any]] = []

    async def guard(arguments: dict[str, Any]) -> None:
        guarded.append(arguments)
        return None

    outcome = await registry.dispatch("refund", text, "fc1", ctx(), guard)
    assert outcome.error_type == "invalid_arguments", outcome.output
    message = json.loads(outcome.output)["error"]["message"]
    assert where in message and spelled in message, message
    assert "finite" in message and "call it again" in message.lower()
    assert tool.runs == [] and guarded == []  # neither the approval guard nor the tool saw it


async def test_finite_numbers_still_pass() -> None:
    registry = ToolRegistry()
    tool = Refund()
    registry.register(tool)
    outcome = await registry.dispatch("refund", '{"amount": 1.5e3, "currency": "NaN"}', "fc1", ctx())
    assert outcome.ok, outcome.output
    assert tool.runs == [{"amount": 1500.0, "currency": "NaN"}]  # "NaN" as a string is just text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("condition", ["amount > 100", "amount <= 100", "not (amount < 100)", "amount == 5"])
def test_non_finite_values_never_slip_past_a_condition(condition: str, value: float) -> None:
    assert when(condition).requires_approval({"amount": value}) is True


@pytest.mark.parametrize(
    ("condition", "arguments"),
    [
        ("amount > 100", {}),
        ("currency == 'USD'", {"amount": 5}),
        ("currency != 'EUR'", {"amount": 5}),
        ("address.city == 'Paris'", {"address": {}}),
        ("amount > 100 and currency == 'USD'", {"amount": 500}),
        ("vip", {}),
        ("not vip", {}),
        ("'urgent' in tags", {}),
        ("amount in [limit, 10]", {"amount": 3}),
    ],
)
def test_a_condition_on_a_missing_field_requires_approval(condition: str, arguments: dict[str, Any]) -> None:
    assert when(condition).requires_approval(arguments) is True


def test_presence_tests_and_short_circuits_still_decide() -> None:
    # comparing with None is how a flow tests whether a field was given
    assert when("note == None").requires_approval({}) is True
    assert when("note != None").requires_approval({}) is False
    assert when("note != None").requires_approval({"note": "x"}) is True
    # a field the condition never reaches does not matter
    policy = when("action == 'book' and party_size > 8")
    assert policy.requires_approval({"action": "find_slots"}) is False
    assert policy.requires_approval({"action": "book"}) is True
    assert policy.requires_approval({"action": "book", "party_size": 4}) is False
    assert when("amount > 100").requires_approval({"amount": 50}) is False


def test_arguments_nested_too_deeply_are_refused_not_walked() -> None:
    """A model (or an injected prompt) nesting arguments hundreds deep must get a clear refusal: records,
    events, redaction and JSON encoding all walk the arguments and would fail deep inside the call."""
    from ivr.tools.registry import MAX_ARGUMENT_DEPTH, _parse_arguments

    deep = '{"a": ' + "[" * 600 + "]" * 600 + "}"
    assert _parse_arguments(deep) == f"are nested too deeply (more than {MAX_ARGUMENT_DEPTH} levels)"
    ok = '{"a": ' + "[" * (MAX_ARGUMENT_DEPTH - 1) + "]" * (MAX_ARGUMENT_DEPTH - 1) + "}"
    assert _parse_arguments(ok) == {"a": _nested(MAX_ARGUMENT_DEPTH - 1)}


def _nested(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels - 1):
        value = [value]
    return value
