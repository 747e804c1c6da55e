"""The key schema is a public contract: every key under the prefix, patterns frozen, all documented — in both
forms: today's names (a single Redis, Sentinel) and the hash-tagged ones of Redis Cluster, where every key of
one family must land in one hash slot (scripts and MULTI cannot span slots)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.crc import key_slot

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
    "events_hwm": "ivr:events:hwm:{sid}",
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
    "approval_call": "ivr:approval:{aid}:call",
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


#: The Redis Cluster names (``KeySchema(hash_tags=True)``): braces are literal hash tags, ``<…>`` are ids.
TAGGED_SNAPSHOT = {
    "call": "ivr:call:{<sid>}",
    "transcript": "ivr:call:{<sid>}:transcript",
    "call_events": "ivr:call:{<sid>}:events",
    "context": "ivr:call:{<sid>}:context",
    "stream_claim": "ivr:call:{<sid>}:stream",
    "resumed_stream_claim": "ivr:call:{<sid>}:stream:<n>",
    "call_link": "ivr:call:{<sid>}:link",
    "call_approvals": "ivr:call:{<sid>}:approvals",
    "events": "ivr:{ivr}:events",
    "events_hwm": "ivr:{ivr}:events:hwm:<sid>",
    "active_calls": "ivr:{ivr}:calls:active",
    "recent_calls": "ivr:{ivr}:calls:recent",
    "recent_calls_by_flow": "ivr:{ivr}:calls:recent:flow:<flow>",
    "recent_calls_by_outcome": "ivr:{ivr}:calls:recent:outcome:<outcome>",
    "recent_calls_by_instance": "ivr:{ivr}:calls:recent:instance:<iid>",
    "recent_calls_by_caller": "ivr:{ivr}:calls:recent:caller:<tail>",
    "instances": "ivr:{ivr}:instances",
    "instance": "ivr:{ivr}:instance:<iid>",
    "instance_calls": "ivr:{ivr}:instance:<iid>:calls",
    "instance_channel": "ivr:{ivr}:instance:<iid>:channel",
    "instance_takeover": "ivr:{ivr}:instance:<iid>:takeover",
    "approval": "ivr:approval:{<sid>}:<aid>",
    "approval_call": "ivr:{ivr}:approval:<aid>:call",
    "approvals_pending": "ivr:{ivr}:approvals:pending",
    "approvals_audit": "ivr:{ivr}:approvals:audit",
    "approval_channel": "ivr:{ivr}:approvals:channel",
    "approvals_sweeper": "ivr:{ivr}:approvals:sweeper",
    "calendar_slot": "ivr:calendar:{<cal>}:slot:<start_iso>",
    "calendar_bookings": "ivr:calendar:{<cal>}:bookings",
    "booking": "ivr:booking:{<cal>}:<bid>",
    "booking_idempotency": "ivr:idempotency:booking:{<cal>}:<call_sid>:<digest>",
    "dataset_record": "ivr:dataset:{<ds>}:record:<key>",
    "dataset_meta": "ivr:dataset:{<ds>}:meta",
    "operators": "ivr:{ivr}:operators",
    "operator": "ivr:{ivr}:operator:<name>",
    "operator_sessions": "ivr:{ivr}:operator:<name>:sessions",
    "operator_token": "ivr:{ivr}:operators:token:<digest>",
    "operator_session": "ivr:{ivr}:operators:session:<digest>",
}

#: Which family (hash tag) each key belongs to on Redis Cluster; the keys of one family share a slot.
FAMILIES = {
    "call": [
        "call",
        "transcript",
        "call_events",
        "context",
        "stream_claim",
        "resumed_stream_claim",
        "call_link",
        "call_approvals",
        "approval",
    ],
    "global": [
        "events",
        "events_hwm",
        "active_calls",
        "recent_calls",
        "recent_calls_by_flow",
        "recent_calls_by_outcome",
        "recent_calls_by_instance",
        "recent_calls_by_caller",
        "instances",
        "instance",
        "instance_calls",
        "instance_channel",
        "instance_takeover",
        "approval_call",
        "approvals_pending",
        "approvals_audit",
        "approval_channel",
        "approvals_sweeper",
        "operators",
        "operator",
        "operator_sessions",
        "operator_token",
        "operator_session",
    ],
    "calendar": ["calendar_slot", "calendar_bookings", "booking", "booking_idempotency"],
    "dataset": ["dataset_record", "dataset_meta"],
}

#: Concrete values for every parameter name, for building real keys.
VALUES = {
    "sid": "CA0123456789abcdef0123456789abcdef",
    "call_sid": "CA0123456789abcdef0123456789abcdef",
    "n": "2",
    "aid": "ap_0011223344556677",
    "flow": "clinic",
    "outcome": "completed",
    "iid": "host-8080",
    "tail": "42",
    "cal": "dr-smith",
    "start_iso": "2026-03-02T09:30Z",
    "bid": "K7QX2M",
    "digest": "0f" * 16,
    "ds": "patients",
    "key": "+15551234567",
    "name": "alice",
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


def tagged_pattern(schema: KeySchema, name: str) -> str:
    """The key a hash-tagged method builds when each id is its own parameter name in angle brackets."""
    method = getattr(schema, name)
    return method(*[f"<{p}>" for p in inspect.signature(method).parameters])


def concrete(schema: KeySchema, name: str) -> str:
    """A real key of the method, every id from :data:`VALUES`."""
    method = getattr(schema, name)
    return method(*[VALUES[p] for p in inspect.signature(method).parameters])


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


# --- Redis Cluster: hash tags ------------------------------------------------------------------------------


def test_tagged_snapshot_of_every_key_pattern() -> None:
    schema = KeySchema(hash_tags=True)
    assert {name: tagged_pattern(schema, name) for name in key_methods()} == TAGGED_SNAPSHOT


def test_without_tags_the_extra_arguments_change_nothing() -> None:
    """The ``sid``/``cal`` arguments tagged keys need are ignored without tags: today's names, byte for
    byte."""
    schema = KeySchema()
    assert schema.approval("ap_1", "CA1") == schema.approval("ap_1") == "ivr:approval:ap_1"
    assert schema.booking("K7QX2M", "dr-smith") == schema.booking("K7QX2M") == "ivr:booking:K7QX2M"
    assert (
        schema.booking_idempotency("CA1", "ab", "dr-smith")
        == schema.booking_idempotency("CA1", "ab")
        == "ivr:idempotency:booking:CA1:ab"
    )
    assert KeySchema.for_url("redis://localhost:6379/0") == schema
    assert KeySchema.for_url("redis+sentinel://s1/mymaster") == schema
    assert KeySchema.for_url("redis+cluster://n1,n2") == KeySchema(hash_tags=True)


def test_families_cover_every_key_once() -> None:
    members = [name for names in FAMILIES.values() for name in names]
    assert sorted(members) == key_methods()


@pytest.mark.parametrize("prefix", ["ivr:", "acme-prod:", "a:b:"])
def test_every_family_lands_in_one_slot(prefix: str) -> None:
    """The keys a script or a MULTI writes together share a hash slot (what Redis Cluster requires), and the
    slot is the one of the family's tag: the call's sid, the global tag, the calendar, the dataset."""
    schema = KeySchema(prefix, hash_tags=True)
    expected = {
        "call": VALUES["sid"],
        "global": prefix[:-1],
        "calendar": VALUES["cal"],
        "dataset": VALUES["ds"],
    }
    for family, names in FAMILIES.items():
        slots = {name: key_slot(concrete(schema, name).encode()) for name in names}
        assert set(slots.values()) == {key_slot(expected[family].encode())}, (family, slots)
    assert schema.events() == f"{prefix}{{{prefix[:-1]}}}:events"
    assert schema.global_tag == f"{{{prefix[:-1]}}}"
    for name in key_methods():
        assert concrete(schema, name).startswith(prefix) and schema.owns(concrete(schema, name))


def test_calls_spread_over_slots() -> None:
    """Each call has its own slot, so calls spread over the cluster's nodes (not one hot slot)."""
    schema = KeySchema(hash_tags=True)
    slots = {key_slot(schema.call(f"CA{n:032x}").encode()) for n in range(64)}
    assert len(slots) > 50
    without = {key_slot(KeySchema().call(f"CA{n:032x}").encode()) for n in range(64)}
    assert key_slot(KeySchema().events().encode()) == key_slot(b"ivr:events") and len(without) > 50


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda k: k.call("CA{1}"), "call sid='CA{1}' contains '{'"),
        (lambda k: k.instance("host}"), "instance id='host}' contains '}'"),
        (lambda k: k.calendar_slot("dr{x", "2026-01-01T09:00"), "calendar='dr{x' contains '{'"),
        (lambda k: k.dataset_meta("p}"), "dataset='p}' contains '}'"),
        (lambda k: k.approval("ap_1"), "needs its call sid"),
        (lambda k: k.booking("K7QX2M"), "needs its calendar"),
        (lambda k: k.booking_idempotency("CA1", "ab"), "needs its calendar"),
    ],
)
def test_tagged_ids_refuse_braces_and_missing_slots(
    call: Callable[[KeySchema], object], message: str
) -> None:
    with pytest.raises(KeySchemaError, match=message.replace("{", "\\{").replace("}", "\\}")):
        call(KeySchema(hash_tags=True))


def test_tagged_prefix_refuses_braces() -> None:
    with pytest.raises(KeySchemaError, match="must not contain '\\{' or '\\}'"):
        KeySchema("{ivr}:", hash_tags=True)
    assert KeySchema("{ivr}:").events() == "{ivr}:events"  # without tags: allowed, as before
    assert KeySchema().call("CA{1}") == "ivr:call:CA{1}"  # ids too: today's rules unchanged


def test_tagged_patterns_are_documented() -> None:
    doc = DOC.read_text()
    schema = KeySchema(hash_tags=True)
    missing = [p for p in (tagged_pattern(schema, n) for n in key_methods()) if f"`{p}`" not in doc]
    assert not missing, f"docs/redis.md does not document the Cluster names: {missing}"


def test_tagged_schema_value_semantics() -> None:
    assert KeySchema(hash_tags=True) == KeySchema(hash_tags=True) != KeySchema()
    assert len({KeySchema(hash_tags=True), KeySchema()}) == 2
    assert repr(KeySchema("a:", hash_tags=True)) == "KeySchema(prefix='a:', hash_tags=True)"
