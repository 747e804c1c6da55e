"""Property-based fuzzing of the tool-argument path: the model's JSON text → ``ToolRegistry.dispatch``.

Why: the arguments of a function call are written by the model, so they can be anything — malformed JSON,
``NaN``, ``1e999``, a 5,000-digit integer, ten thousand nested brackets. ``dispatch`` promises never to raise
for a bad call (one broken call must not end the phone call), to give the model a JSON error it can act on,
to run a tool only with arguments that match its schema, and — together with the approval gate — never to
run a guarded action past its condition. Hypothesis checks those promises on generated and mutated
argument texts, with a real registry, a real tool and the real approval policy as the guard.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.approvals.policy import ApprovalPolicy
from ivr.flows import Flow
from ivr.tools.registry import ToolContext, ToolOutcome, ToolRegistry, ToolSpec

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

REFUND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "amount": {"type": "number"},
        "currency": {"type": "string", "enum": ["USD", "EUR"]},
        "reason": {"type": "string", "maxLength": 200},
        "items": {"type": "array", "items": {"type": "number"}},
    },
    "required": ["amount", "currency"],
    "additionalProperties": False,
}
POLICY = ApprovalPolicy(required="when", when="amount > 100")


@dataclass
class NoCall:
    def request_hangup(self, reason: str) -> None:
        raise AssertionError("a refund never hangs up")

    def request_transfer(self, number: str, announcement: str | None) -> None:
        raise AssertionError("a refund never transfers")


class Refund:
    """A real tool that records every argument object it was run with."""

    def __init__(self) -> None:
        self.spec = ToolSpec("refund", "Refund an amount.", REFUND_SCHEMA, timeout_s=5.0)
        self.runs: list[dict[str, Any]] = []

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        self.runs.append(args)
        return {"refunded": args["amount"], "currency": args["currency"]}


@dataclass
class Gate:
    """The approval step as the call runtime applies it: stop the tool when the policy asks for a human."""

    asked: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, arguments: dict[str, Any]) -> tuple[Any, str] | None:
        if POLICY.requires_approval(arguments):
            self.asked.append(arguments)
            return {
                "error": {"type": "approval_required", "message": "waiting for a human"}
            }, "approval_required"
        return None


def _dispatch(text: str) -> tuple[ToolOutcome, Refund, Gate]:
    registry = ToolRegistry()
    tool = Refund()
    registry.register(tool)
    gate = Gate()
    ctx = ToolContext(
        call_sid="CA" + "f" * 32,
        flow=Flow.model_validate({"id": "fuzz", "instructions": "hi"}),
        call=NoCall(),
        caller_number="+15550100001",
    )
    outcome = asyncio.run(registry.dispatch("refund", text, "call_fuzz", ctx, guard=gate))
    return outcome, tool, gate


def _finite_everywhere(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_everywhere(v) for v in value)
    return True


def _check(outcome: ToolOutcome, tool: Refund, gate: Gate) -> None:
    """The promises that hold for any input whatsoever."""
    payload = orjson.loads(outcome.output)  # strict JSON: no NaN/Infinity ever reaches the model
    if outcome.ok:
        assert outcome.error_type is None
        assert len(tool.runs) == 1
        args = tool.runs[0]
        assert _finite_everywhere(args), f"the tool ran with a non-finite number: {args!r}"
        assert isinstance(args["amount"], int | float) and not isinstance(args["amount"], bool)
        assert args["amount"] <= 100, f"refund of {args['amount']!r} ran without approval"
        assert payload == {"refunded": args["amount"], "currency": args["currency"]}
    else:
        assert tool.runs == [], "the tool ran although the outcome is a failure"
        assert outcome.error_type
        assert set(payload["error"]) >= {"type", "message"} if "error" in payload else True
        if outcome.error_type == "invalid_arguments":
            assert "'refund'" in payload["error"]["message"]


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_like = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    _check(*_dispatch(text))


@FUZZ
@given(json_like)
def test_arbitrary_python_json_never_raises(value: Any) -> None:
    """Encoded by Python's json (which writes NaN/Infinity): refused or run, never raised."""
    _check(*_dispatch(json.dumps(value)))


amounts = (
    st.integers(min_value=-(10**6), max_value=10**6)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e308", "100.0000000000001"])
)


@FUZZ
@given(
    amounts,
    st.sampled_from(["USD", "EUR", "GBP"]),
    st.lists(amounts, max_size=3),
    st.booleans(),
    st.dictionaries(st.text(max_size=5), json_scalars, max_size=2),
)
def test_refund_arguments_are_never_run_past_the_condition(
    amount: Any, currency: str, items: list[Any], with_amount: bool, extra: dict[str, Any]
) -> None:
    """Near-valid arguments (the interesting ones): a refund over 100 or not finite never runs unapproved."""

    def token(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value)

    fields = [f'"currency": "{currency}"', f'"items": [{", ".join(token(i) for i in items)}]']
    if with_amount:
        fields.insert(0, f'"amount": {token(amount)}')
    fields += [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in extra.items()]
    outcome, tool, gate = _dispatch("{" + ", ".join(fields) + "}")
    _check(outcome, tool, gate)
    non_finite = isinstance(amount, str) and not amount.startswith(("1e308", "100."))
    if not with_amount or non_finite or currency == "GBP":
        assert not outcome.ok


@FUZZ
@given(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]), st.sampled_from(["amount", "items"])
)
def test_non_finite_numbers_are_refused_before_the_gate(token: str, where: str) -> None:
    """NaN compares false with everything, so it must never reach the policy (finding 10)."""
    value = token if where == "amount" else f"[1, {token}]"
    amount = "5" if where == "items" else token
    text = f'{{"amount": {amount}, "currency": "USD", "items": {value if where == "items" else "[]"}}}'
    outcome, tool, gate = _dispatch(text)
    _check(outcome, tool, gate)
    assert outcome.error_type == "invalid_arguments", outcome.output
    assert gate.asked == []


@FUZZ
@given(st.integers(min_value=4301, max_value=20000), st.sampled_from(["amount", "reason", "extra"]))
def test_huge_integer_literals_are_refused_not_raised(digits: int, where: str) -> None:
    """Python refuses to convert integers over 4,300 digits with a ValueError that is not a JSONDecodeError.

    Found by fuzzing: ``dispatch`` let it escape, breaking its "never raises" promise.
    """
    number = "9" * digits
    text = f'{{"amount": 5, "currency": "USD", "{where}": {number}}}'
    outcome, tool, gate = _dispatch(text)
    _check(outcome, tool, gate)
    assert outcome.error_type == "invalid_arguments"


@FUZZ
@given(st.integers(min_value=1, max_value=200_000), st.sampled_from(["[", '{"a":']))
def test_deep_nesting_never_raises(depth: int, opener: str) -> None:
    text = '{"amount": 5, "currency": "USD", "items": ' + opener * depth
    _check(*_dispatch(text))


@FUZZ
@given(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=100)
    | st.integers(min_value=-(10**9), max_value=100),
    st.sampled_from(["USD", "EUR"]),
    st.text(max_size=50),
)
def test_valid_small_refunds_run_with_exactly_their_arguments(
    amount: float, currency: str, reason: str
) -> None:
    """No false refusals: valid arguments under the threshold run, and the tool sees exactly them."""
    args = {"amount": amount, "currency": currency, "reason": reason}
    outcome, tool, gate = _dispatch(json.dumps(args))
    _check(outcome, tool, gate)
    assert outcome.ok, outcome.output
    assert tool.runs == [args]
    assert gate.asked == []
