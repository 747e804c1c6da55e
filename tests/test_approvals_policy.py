"""ApprovalPolicy: the condition language is parsed at validation time, limited, and fails closed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ivr.approvals.policy import ALLOWED_SYNTAX, ApprovalPolicy, ConditionError, compile_condition


def when(condition: str, **extra: object) -> ApprovalPolicy:
    return ApprovalPolicy.model_validate({"required": "when", "when": condition, **extra})


def test_defaults_never_require_approval() -> None:
    policy = ApprovalPolicy()
    assert policy.required == "never"
    assert policy.timeout_s == 120.0
    assert policy.requires_approval({"amount": 10_000}) is False


def test_always_requires_approval_whatever_the_arguments() -> None:
    policy = ApprovalPolicy(required="always", reason="Refunds need a manager")
    assert policy.requires_approval({}) is True
    assert policy.requires_approval({"amount": 0}) is True


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"amount": 150, "currency": "USD"}, True),
        ({"amount": 100, "currency": "USD"}, False),
        ({"amount": 150.5, "currency": "EUR"}, False),
        ({"amount": 99, "currency": "USD"}, False),
    ],
)
def test_condition_over_arguments(arguments: dict[str, object], expected: bool) -> None:
    policy = when("amount > 100 and currency == 'USD'")
    assert policy.requires_approval(arguments) is expected


def test_dotted_fields_reach_into_nested_objects() -> None:
    policy = when("address.city in ['Paris', 'Rome'] or address.zip.prefix == '75'")
    assert policy.requires_approval({"address": {"city": "Rome"}}) is True
    assert policy.requires_approval({"address": {"city": "Oslo", "zip": {"prefix": "75"}}}) is True
    assert policy.requires_approval({"address": {"city": "Oslo", "zip": {"prefix": "01"}}}) is False
    assert policy.fields == frozenset({"address.city", "address.zip.prefix"})


def test_missing_fields_are_none_only_for_presence_tests() -> None:
    policy = when("note == None or not vip")
    assert policy.requires_approval({}) is True
    assert policy.requires_approval({"note": "x", "vip": True}) is False
    # any other use of a missing field fails closed (issue 9, finding 10)
    assert when("address.city == 'Paris'").requires_approval({"address": {}}) is True


@pytest.mark.parametrize(
    ("arguments", "why"),
    [
        ({}, "None > 100"),
        ({"amount": None}, "explicit None"),
        ({"amount": "150"}, "string compared with a number"),
        ({"amount": [1]}, "list compared with a number"),
        ({"amount": {"value": 1}}, "object compared with a number"),
    ],
)
def test_type_mismatch_fails_closed(arguments: dict[str, object], why: str) -> None:
    assert when("amount > 100").requires_approval(arguments) is True, why


def test_mismatch_is_not_negated_away() -> None:
    # `not (None > 100)` must not turn a meaningless comparison into "no approval needed".
    assert when("not (amount > 100)").requires_approval({}) is True
    assert when("not (amount > 100)").requires_approval({"amount": 5}) is True
    assert when("not (amount > 100)").requires_approval({"amount": 500}) is False


def test_dotted_field_into_a_non_object_fails_closed() -> None:
    assert when("address.city == 'Paris'").requires_approval({"address": "Paris"}) is True


def test_in_and_not_in() -> None:
    policy = when("currency not in ('USD', 'EUR') or 'urgent' in tags")
    assert policy.requires_approval({"currency": "GBP", "tags": []}) is True
    assert policy.requires_approval({"currency": "USD", "tags": ["urgent"]}) is True
    assert policy.requires_approval({"currency": "USD", "tags": ["normal"]}) is False
    # 'in' a missing list: fail closed
    assert when("'urgent' in tags").requires_approval({}) is True
    assert when("'x' in name").requires_approval({"name": "xavier"}) is True
    assert when("'q' in name").requires_approval({"name": "xavier"}) is False


def test_chained_comparisons_negative_numbers_and_yaml_constants() -> None:
    policy = when("-10 <= delta < 0 or flagged == true")
    assert policy.requires_approval({"delta": -5}) is True
    assert policy.requires_approval({"delta": 5, "flagged": False}) is False
    assert policy.requires_approval({"delta": 5, "flagged": True}) is True
    assert when("x == null").requires_approval({}) is True


def test_multi_line_condition_from_a_folded_yaml_block() -> None:
    policy = when("amount > 100\n  and currency == 'USD'\n")
    assert policy.when == "amount > 100   and currency == 'USD'"
    assert policy.requires_approval({"amount": 101, "currency": "USD"}) is True


@pytest.mark.parametrize(
    ("condition", "named"),
    [
        ("len(items) > 2", "function calls"),
        ("items[0] == 1", "subscripts"),
        ("x.__class__ == 1", "'__'"),
        ("__import__ == 1", "'__'"),
        ("(lambda: 1) == 1", "lambdas"),
        ("amount + 1 > 100", "arithmetic"),
        ("'abc'.upper == 1", "attributes on anything but an argument name"),
        ("x is None", "'is'"),
        ("{1, 2} == x", "set literals"),
        ("{'a': 1} == x", "dict literals"),
        ("[i for i in x] == x", "comprehensions"),
        ("a if b else c", "if/else"),
        ("(y := 1) == 1", "assignments"),
        ("f'{x}' == 'a'", "f-strings"),
        ("~x == 1", "bitwise"),
        ("-x == 1", "signs on anything but a number"),
        ("x == b'raw'", "constants other than"),
        ("amount >", "not a valid expression"),
        ("", "empty"),
        ("x == 1; y == 2", "not a valid expression"),
    ],
)
def test_rejections_say_what_is_not_allowed_and_what_is(condition: str, named: str) -> None:
    with pytest.raises(ValidationError) as info:
        when(condition)
    message = str(info.value)
    assert named in message
    assert ALLOWED_SYNTAX in message
    assert "when" in message  # the field is named


def test_compile_condition_raises_condition_error_directly() -> None:
    with pytest.raises(ConditionError, match="function calls are not allowed"):
        compile_condition("open('x')")


def test_overlong_condition_is_rejected() -> None:
    with pytest.raises(ValidationError, match="characters long"):
        when(" or ".join(["a == 1"] * 200))


def test_required_when_needs_a_condition_and_vice_versa() -> None:
    with pytest.raises(ValidationError, match="required: when needs a 'when' condition"):
        ApprovalPolicy(required="when")
    with pytest.raises(ValidationError, match="'when' is only used with required: when"):
        ApprovalPolicy(required="always", when="amount > 1")
    with pytest.raises(ValidationError, match="'when' is only used with required: when"):
        ApprovalPolicy.model_validate({"when": "amount > 1"})


@pytest.mark.parametrize("timeout", [4.9, 3600.5, 0, -1])
def test_timeout_range(timeout: float) -> None:
    with pytest.raises(ValidationError, match="out of range"):
        ApprovalPolicy(required="always", timeout_s=timeout)


def test_model_is_strict_frozen_and_closed() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ApprovalPolicy.model_validate({"required": "always", "timeot_s": 10})
    with pytest.raises(ValidationError):
        ApprovalPolicy.model_validate({"required": "always", "timeout_s": "60"})  # no string coercion
    with pytest.raises(ValidationError):
        ApprovalPolicy.model_validate({"required": "sometimes"})
    policy = ApprovalPolicy.model_validate({"required": "always", "timeout_s": 60})  # YAML int is fine
    assert policy.timeout_s == 60.0
    with pytest.raises(ValidationError):
        policy.required = "never"  # type: ignore[misc]


def test_evaluation_never_raises_on_odd_inputs() -> None:
    policy = when("amount > 100")
    assert policy.requires_approval(None) is True  # type: ignore[arg-type]
    assert policy.requires_approval({"amount": float("nan")}) is True  # NaN > 100 is False: fail closed
    assert when("items == [1, 2]").requires_approval({"items": [1, 2]}) is True
    assert when("items == (1, 2)").requires_approval({"items": [1, 2]}) is True  # JSON arrays are lists
    assert when("items == [1, 2]").requires_approval({"items": [2, 1]}) is False
    assert when("'k' in data").requires_approval({"data": {"k": 1}}) is True
    assert when("[1] in data").requires_approval({"data": {"k": 1}}) is True  # unhashable → fail closed
