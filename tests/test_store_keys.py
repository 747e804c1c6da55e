"""The key schema is a public contract: every key under the prefix, patterns frozen, all documented."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from ivr.store.keys import KEY_TYPES, KeySchema, KeySchemaError

DOC = Path(__file__).resolve().parent.parent / "docs" / "redis.md"
HELPERS = {"match_all", "owns"}

#: The contract. Changing a line here is a breaking change for dashboards and other tools (docs/redis.md).
SNAPSHOT = {
    "call": "ivr:call:{sid}",
    "transcript": "ivr:call:{sid}:transcript",
    "call_events": "ivr:call:{sid}:events",
    "context": "ivr:call:{sid}:context",
    "stream_claim": "ivr:call:{sid}:stream",
    "resumed_stream_claim": "ivr:call:{sid}:stream:{n}",
    "call_link": "ivr:call:{sid}:link",
    "call_approvals": "ivr:call:{sid}:approvals",
    "events": "ivr:events",
    "active_calls": "ivr:calls:active",
    "recent_calls": "ivr:calls:recent",
    "recent_calls_by_flow": "ivr:calls:recent:flow:{flow}",
    "recent_calls_by_outcome": "ivr:calls:recent:outcome:{outcome}",
    "recent_calls_by_instance": "ivr:calls:recent:instance:{iid}",
    "recent_calls_by_caller": "ivr:calls:recent:caller:{tail}",
    "instances": "ivr:instances",
    "instance": "ivr:instance:{iid}",
    "instance_calls": "ivr:instance:{iid}:calls",
    "instance_channel": "ivr:instance:{iid}:channel",
    "instance_takeover": "ivr:instance:{iid}:takeover",
    "approval": "ivr:approval:{aid}",
    "approvals_pending": "ivr:approvals:pending",
    "approvals_audit": "ivr:approvals:audit",
    "approval_channel": "ivr:approvals:channel",
    "approvals_sweeper": "ivr:approvals:sweeper",
    "calendar_slot": "ivr:calendar:{cal}:slot:{start_iso}",
    "calendar_bookings": "ivr:calendar:{cal}:bookings",
    "booking": "ivr:booking:{bid}",
    "booking_idempotency": "ivr:idempotency:booking:{call_sid}:{digest}",
    "dataset_record": "ivr:dataset:{ds}:record:{key}",
    "dataset_meta": "ivr:dataset:{ds}:meta",
    "operators": "ivr:operators",
    "operator": "ivr:operator:{name}",
    "operator_sessions": "ivr:operator:{name}:sessions",
    "operator_token": "ivr:operators:token:{digest}",
    "operator_session": "ivr:operators:session:{digest}",
}


def key_methods() -> list[str]:
    return sorted(
        name
        for name, member in inspect.getmembers(KeySchema, inspect.isfunction)
        if not name.startswith("_") and name not in HELPERS
    )


def pattern(schema: KeySchema, name: str) -> str:
    """The key a method builds when each id is its own parameter name in braces."""
    method = getattr(schema, name)
    params = [p for p in inspect.signature(method).parameters]
    return method(*[f"{{{p}}}" for p in params])


def test_snapshot_of_every_key_pattern() -> None:
    schema = KeySchema()
    assert {name: pattern(schema, name) for name in key_methods()} == SNAPSHOT


def test_every_pattern_is_documented() -> None:
    doc = DOC.read_text()
    schema = KeySchema()
    missing = [p for p in (pattern(schema, n) for n in key_methods()) if f"`{p}`" not in doc]
    assert not missing, f"docs/redis.md does not document: {missing}"


def test_every_key_has_a_documented_type() -> None:
    assert sorted(KEY_TYPES) == key_methods()
    assert set(KEY_TYPES.values()) <= {"hash", "stream", "zset", "set", "string", "channel"}
    doc = DOC.read_text()
    schema = KeySchema()
    for name in key_methods():
        kind = "pub/sub channel" if KEY_TYPES[name] == "channel" else KEY_TYPES[name]
        assert f"| `{pattern(schema, name)}` | {kind} |" in doc, f"{name}: type {kind} not in docs/redis.md"


@pytest.mark.parametrize("prefix", ["ivr:", "acme-prod:", "ivr-test-0a1b:", "a:b:"])
def test_every_key_starts_with_the_prefix(prefix: str) -> None:
    schema = KeySchema(prefix)
    for name in key_methods():
        key = pattern(schema, name)
        assert key.startswith(prefix), key
        assert schema.owns(key)
        assert key[len(prefix) :] == SNAPSHOT[name][len("ivr:") :]
    assert schema.match_all() == prefix + "*"
    assert not schema.owns("other:call:CA1")


def test_keys_are_distinct() -> None:
    schema = KeySchema()
    keys = [pattern(schema, name) for name in key_methods()]
    assert len(set(keys)) == len(keys)


def test_ids_are_verbatim() -> None:
    schema = KeySchema()
    sid = "CA0123456789abcdef0123456789abcdef"
    assert schema.call(sid) == f"ivr:call:{sid}"
    assert schema.transcript(sid) == f"ivr:call:{sid}:transcript"
    assert schema.calendar_slot("dr-smith", "2026-03-02T09:30:00+01:00") == (
        "ivr:calendar:dr-smith:slot:2026-03-02T09:30:00+01:00"
    )
    assert schema.dataset_record("patients", "+15551234567") == "ivr:dataset:patients:record:+15551234567"
    assert schema.dataset_record("orders", "A 17:3") == "ivr:dataset:orders:record:A 17:3"


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("", "must not be empty"),
        ("ivr", "must end with ':'"),
        ("my app:", "contains ' '"),
        ("ivr*:", "contains '\\*'"),
        ("ivr[1]:", "contains '\\['"),
        ("ivr\n:", "contains"),
    ],
)
def test_bad_prefix_is_refused_with_the_reason(prefix: str, message: str) -> None:
    with pytest.raises(KeySchemaError, match=message) as info:
        KeySchema(prefix)
    assert "IVR_REDIS_PREFIX" in str(info.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda k: k.call(""), "call sid must not be empty"),
        (lambda k: k.call("CA1:transcript"), "call sid='CA1:transcript' contains ':'"),
        (lambda k: k.instance("host 1"), "instance id='host 1' contains ' '"),
        (lambda k: k.approval(None), "approval id must be a string, got NoneType"),
        (lambda k: k.calendar_slot("a:b", "2026-01-01T09:00"), "calendar='a:b' contains ':'"),
        (lambda k: k.calendar_slot("dr", ""), "slot start must not be empty"),
        (lambda k: k.dataset_record("ds", "x\ny"), "record key='x\\\\ny' contains"),
        (lambda k: k.booking("b" * 600), "at most 512"),
    ],
)
def test_bad_ids_are_refused_with_the_reason(call: Callable[[KeySchema], object], message: str) -> None:
    with pytest.raises(KeySchemaError, match=message):
        call(KeySchema())


def test_schema_value_semantics() -> None:
    assert KeySchema("a:") == KeySchema("a:")
    assert KeySchema("a:") != KeySchema("b:")
    assert len({KeySchema("a:"), KeySchema("a:")}) == 1
    assert repr(KeySchema()) == "KeySchema(prefix='ivr:')"
