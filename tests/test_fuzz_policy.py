"""Property-based fuzzing of the approval policy: its condition language and its evaluator.

Why: ``approval: {required: when, when: "amount > 100"}`` is what stands between the model and an action a
human must approve, and the model writes the arguments. Hypothesis generates conditions from the allowed
grammar and arguments of every JSON shape, and checks: compiling any text either gives a condition or a
``ConditionError`` (never another exception); evaluation never raises; with ordinary finite numbers the
answer is exactly what the expression says (no false alarms); and when the fields a condition reads are
missing or not finite numbers (``NaN``, ``Infinity``), the answer is "requires approval" (fail closed).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.approvals.policy import ApprovalPolicy, Condition, ConditionError, compile_condition

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIELDS = ("amount", "party_size", "total", "order.count")
OPS = ("<", "<=", ">", ">=", "==", "!=")


# -- a tiny expression model: every leaf compares a field with a number, so every leaf reads a field ------


@dataclass(frozen=True)
class Leaf:
    field: str
    op: str
    number: int | float

    def source(self) -> str:
        return f"{self.field} {self.op} {self.number!r}"

    def value(self, args: dict[str, Any]) -> bool:
        left: Any = args
        for part in self.field.split("."):
            left = left[part]
        return {
            "<": left < self.number,
            "<=": left <= self.number,
            ">": left > self.number,
            ">=": left >= self.number,
            "==": left == self.number,
            "!=": left != self.number,
        }[self.op]


@dataclass(frozen=True)
class Not:
    inner: Expr

    def source(self) -> str:
        return f"not ({self.inner.source()})"

    def value(self, args: dict[str, Any]) -> bool:
        return not self.inner.value(args)


@dataclass(frozen=True)
class BoolOp:
    op: str
    parts: tuple[Expr, ...]

    def source(self) -> str:
        return f" {self.op} ".join(f"({p.source()})" for p in self.parts)

    def value(self, args: dict[str, Any]) -> bool:
        values = (p.value(args) for p in self.parts)
        return all(values) if self.op == "and" else any(values)


Expr = Leaf | Not | BoolOp

numbers = st.integers(min_value=-1000, max_value=1000) | st.floats(
    min_value=-1000, max_value=1000, allow_nan=False, allow_infinity=False
)
leaves = st.builds(Leaf, st.sampled_from(FIELDS), st.sampled_from(OPS), numbers)
expressions: st.SearchStrategy[Expr] = st.recursive(
    leaves,
    lambda children: (
        st.builds(Not, children)
        | st.builds(BoolOp, st.sampled_from(["and", "or"]), st.tuples(children, children))
    ),
    max_leaves=6,
)


def _args(values: dict[str, Any]) -> dict[str, Any]:
    """Flat field → value pairs as tool arguments (``order.count`` becomes a nested object)."""
    args: dict[str, Any] = {}
    for name, value in values.items():
        if "." in name:
            outer, inner = name.split(".", 1)
            args.setdefault(outer, {})[inner] = value
        else:
            args[name] = value
    return args


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["count", "x"]), children, max_size=2)
    ),
    max_leaves=8,
)


# -- properties --------------------------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=120))
def test_compiling_any_text_gives_a_condition_or_a_condition_error(text: str) -> None:
    try:
        condition = compile_condition(text)
    except ConditionError as exc:
        assert "a condition may use" in str(exc)  # every rejection ends with what is allowed
        return
    assert isinstance(condition, Condition)


@FUZZ
@given(
    st.text(alphabet=st.sampled_from(list("amount()[]<>=!notandor.,'\"0123456789 -+*/%_:~^&|@")), max_size=80)
)
def test_compiling_operator_soup_never_raises_anything_else(text: str) -> None:
    with contextlib.suppress(ConditionError):
        compile_condition(text)


@FUZZ
@given(st.integers(min_value=1, max_value=400), st.sampled_from(["not ", "(", "-", "[", "amount == "]))
def test_deep_conditions_are_refused_or_compiled_never_crash(depth: int, piece: str) -> None:
    closer = {"(": ")", "[": "]"}.get(piece, "")
    text = piece * depth + "1" + closer * depth
    try:
        condition = compile_condition(text)
    except ConditionError:
        return
    assert isinstance(condition.evaluate({"amount": 1}), bool)


@FUZZ
@given(expressions)
def test_generated_conditions_compile_and_round_trip(expr: Expr) -> None:
    source = expr.source()
    condition = compile_condition(source)
    assert compile_condition(condition.source).source == condition.source
    policy = ApprovalPolicy(required="when", when=source)
    assert policy.fields <= set(FIELDS)


@FUZZ
@given(expressions, st.fixed_dictionaries({f: json_values for f in FIELDS}), st.sets(st.sampled_from(FIELDS)))
def test_evaluation_never_raises(expr: Expr, values: dict[str, Any], dropped: set[str]) -> None:
    policy = ApprovalPolicy(required="when", when=expr.source())
    args = _args({k: v for k, v in values.items() if k not in dropped})
    assert isinstance(policy.requires_approval(args), bool)


@FUZZ
@given(expressions, st.fixed_dictionaries({f: numbers for f in FIELDS}))
def test_finite_numbers_get_exactly_the_expression_value(expr: Expr, values: dict[str, Any]) -> None:
    """No false alarms and no misses: with every field a finite number, the answer is the expression's."""
    policy = ApprovalPolicy(required="when", when=expr.source())
    assert policy.requires_approval(_args(values)) is expr.value(_args(values))


bad_values = st.sampled_from([math.nan, math.inf, -math.inf, "missing"])


@FUZZ
@given(expressions, st.fixed_dictionaries({f: bad_values for f in FIELDS}))
def test_missing_or_non_finite_fields_require_approval(expr: Expr, values: dict[str, Any]) -> None:
    """Every leaf reads a field; when none of them holds a usable number the policy must fail closed."""
    policy = ApprovalPolicy(required="when", when=expr.source())
    args = _args({k: v for k, v in values.items() if v != "missing"})
    assert policy.requires_approval(args) is True, (expr.source(), args)


@FUZZ
@given(
    st.sampled_from([">", ">="]),
    st.integers(min_value=0, max_value=10_000),
    json_values,
)
def test_a_threshold_is_never_waved_through_by_an_odd_value(op: str, threshold: int, value: Any) -> None:
    """``amount > T`` without approval only for a real number at or under T."""
    policy = ApprovalPolicy(required="when", when=f"amount {op} {threshold}")
    if policy.requires_approval({"amount": value}):
        return
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    assert math.isfinite(value)
    assert value <= threshold if op == ">" else value < threshold


@FUZZ
@given(json_values)
def test_always_and_never_ignore_the_arguments(args: Any) -> None:
    assert ApprovalPolicy(required="always").requires_approval(args if isinstance(args, dict) else {}) is True
    assert ApprovalPolicy(required="never").requires_approval(args if isinstance(args, dict) else {}) is False
