"""OperatorStore against a real Redis: names and roles, hashed tokens, sessions, revocation."""

from __future__ import annotations

import hashlib
import time

import pytest
import redis.asyncio as aioredis

from ivr.console.operators import (
    BOOTSTRAP_ADMIN,
    ROLES,
    TOKEN_PREFIX,
    Operator,
    OperatorError,
    OperatorExists,
    OperatorStore,
    check_name,
    role_allows,
)
from ivr.store.keys import KeySchema

#: Real-Redis fixtures: redis_client, redis_keys (a unique prefix, cleaned up afterwards).


@pytest.fixture
def store(redis_client: aioredis.Redis, redis_keys: KeySchema) -> OperatorStore:
    return OperatorStore(redis_client, redis_keys, bootstrap_token="bootstrap-secret")


async def every_value(redis: aioredis.Redis, keys: KeySchema) -> str:
    """Every key name and value under the test prefix, as one string (to look for secrets in clear)."""
    parts: list[str] = []
    async for key in redis.scan_iter(match=keys.match_all()):
        parts.append(key)
        kind = await redis.type(key)
        if kind == "hash":
            parts += [f"{k}={v}" for k, v in (await redis.hgetall(key)).items()]
        elif kind == "string":
            parts.append(await redis.get(key) or "")
        elif kind == "set":
            parts += list(await redis.smembers(key))
        elif kind == "zset":
            parts += list(await redis.zrange(key, 0, -1))
    return "\n".join(parts)


async def test_add_returns_a_strong_token_stored_only_as_its_hash(
    store: OperatorStore, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    token = await store.add("alice", "approver")
    assert token.startswith(TOKEN_PREFIX) and len(token) >= len(TOKEN_PREFIX) + 43  # 256 random bits
    assert await store.add("bob", "viewer") != token
    stored = await every_value(redis_client, redis_keys)
    assert token not in stored and token[len(TOKEN_PREFIX) :] not in stored
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert await redis_client.get(redis_keys.operator_token(digest)) == "alice"
    record = await redis_client.hgetall(redis_keys.operator("alice"))
    assert record["token_sha256"] == digest and record["role"] == "approver"
    assert await store.by_token(token) == Operator("alice", "approver")


async def test_list_is_sorted_by_name_and_has_no_tokens(store: OperatorStore) -> None:
    before = time.time()
    await store.add("zoe", "admin")
    await store.add("Bea", "viewer")
    await store.add("carl", "approver")
    listed = await store.list()
    assert [(o.name, o.role) for o in listed] == [("Bea", "viewer"), ("carl", "approver"), ("zoe", "admin")]
    assert all(before - 1 <= o.created_at <= time.time() + 1 for o in listed)
    assert all(o.last_login_at is None for o in listed)
    assert not any("token" in field for field in listed[0].__dataclass_fields__)


async def test_adding_a_name_twice_is_refused_and_keeps_the_first_token(store: OperatorStore) -> None:
    first = await store.add("alice", "viewer")
    with pytest.raises(OperatorExists, match="already exists; remove it first"):
        await store.add("alice", "admin")
    assert await store.by_token(first) == Operator("alice", "viewer")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "1-64 letters"),
        ("has space", "no spaces"),
        ("a" * 65, "1-64"),
        ("colon:name", "1-64 letters"),
        ("émile", "1-64 letters"),
        ("admin", "bootstrap admin"),
        ("Admin", "bootstrap admin"),
        ("timeout", "ran out of time"),
        ("..", "URLs read it as a folder"),  # /ops/operators/../remove would be /ops/remove
        (".", "URLs read it as a folder"),
    ],
)
async def test_bad_names_are_refused_with_the_reason(store: OperatorStore, name: str, why: str) -> None:
    with pytest.raises(OperatorError, match=why):
        await store.add(name, "viewer")


async def test_names_and_roles_that_are_fine() -> None:
    for name in ("alice", "front-desk.1", "A_B", "x" * 64):
        assert check_name(name) == name
    assert role_allows("admin", "approver") and role_allows("approver", "approver")
    assert not role_allows("viewer", "approver") and not role_allows("root", "viewer")
    assert ROLES == ("viewer", "approver", "admin")
    assert Operator("a", "approver").can_decide and not Operator("a", "viewer").can_decide
    assert Operator("a", "admin").is_admin and not Operator("a", "approver").is_admin


async def test_a_bad_role_is_refused(store: OperatorStore) -> None:
    with pytest.raises(OperatorError, match="role 'boss' is not one of viewer, approver, admin"):
        await store.add("alice", "boss")  # type: ignore[arg-type]


async def test_wrong_tokens_are_refused(store: OperatorStore) -> None:
    token = await store.add("alice", "viewer")
    for wrong in ("", "nope", token + "x", token[:-1], TOKEN_PREFIX, "bootstrap-secre", "x" * 5000):
        assert await store.by_token(wrong) is None, wrong
    assert await store.by_token("bootstrap-secret") == BOOTSTRAP_ADMIN


async def test_remove_revokes_the_token_and_every_session_at_once(
    store: OperatorStore, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    token = await store.add("alice", "approver")
    keep = await store.add("bob", "viewer")
    alice = await store.by_token(token)
    assert alice is not None
    sessions = [await store.open_session(alice) for _ in range(2)]
    bob_session = await store.open_session(Operator("bob", "viewer"))
    assert all([await store.session(s.id) for s in sessions])

    assert await store.remove("alice") is True
    assert await store.by_token(token) is None
    assert [await store.session(s.id) for s in sessions] == [None, None]
    assert await store.remove("alice") is False
    assert [o.name for o in await store.list()] == ["bob"]
    assert await store.by_token(keep) == Operator("bob", "viewer")
    assert await store.session(bob_session.id) is not None
    leftovers = [k async for k in redis_client.scan_iter(match=redis_keys.prefix + "*alice*")]
    assert leftovers == []


async def test_a_stale_session_of_a_removed_operator_is_refused(
    store: OperatorStore, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    """Even if a session key survived (a login racing the removal), the role is checked on every read."""
    await store.add("alice", "approver")
    session = await store.open_session(Operator("alice", "approver"))
    await redis_client.delete(redis_keys.operator("alice"))
    assert await store.session(session.id) is None


async def test_a_session_carries_the_operator_csrf_and_expiry(
    store: OperatorStore, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    await store.add("alice", "approver")
    session = await store.open_session(Operator("alice", "approver"), ttl_s=600)
    assert session.operator == Operator("alice", "approver")
    assert len(session.csrf) >= 40 and session.csrf != session.id
    assert time.time() + 590 < session.expires_at <= time.time() + 600
    assert await store.session(session.id) == session
    digest = hashlib.sha256(session.id.encode()).hexdigest()
    key = redis_keys.operator_session(digest)
    assert 590 <= await redis_client.ttl(key) <= 600  # Redis forgets it on its own
    assert session.id not in await every_value(redis_client, redis_keys)  # only its digest is a key
    for bad in ("", "unknown", session.id + "x", "y" * 300):
        assert await store.session(bad) is None


async def test_an_expired_session_is_refused(
    store: OperatorStore, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    """expires_at is checked too, so a session never outlives its time even if its TTL was lost."""
    await store.add("alice", "viewer")
    session = await store.open_session(Operator("alice", "viewer"))
    key = redis_keys.operator_session(hashlib.sha256(session.id.encode()).hexdigest())
    await redis_client.persist(key)
    await redis_client.hset(key, "expires_at", f"{time.time() - 1:.3f}")
    assert await store.session(session.id) is None


async def test_close_session_ends_only_that_session(store: OperatorStore) -> None:
    await store.add("alice", "viewer")
    first = await store.open_session(Operator("alice", "viewer"))
    second = await store.open_session(Operator("alice", "viewer"))
    await store.close_session(first.id)
    await store.close_session("never-existed")
    assert await store.session(first.id) is None
    assert await store.session(second.id) == second


async def test_a_role_is_read_fresh_on_every_request(
    store: OperatorStore, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    await store.add("alice", "approver")
    session = await store.open_session(Operator("alice", "approver"))
    await redis_client.hset(redis_keys.operator("alice"), "role", "viewer")
    fresh = await store.session(session.id)
    assert fresh is not None and fresh.operator == Operator("alice", "viewer")


async def test_last_login_is_recorded(store: OperatorStore) -> None:
    token = await store.add("alice", "viewer")
    await store.add("bob", "viewer")
    before = time.time()
    operator = await store.by_token(token)
    assert operator is not None
    info = await store.get("alice")
    assert info is not None and info.last_login_at is not None and info.last_login_at >= before - 1
    await store.open_session(Operator("bob", "viewer"))
    bob = await store.get("bob")
    assert bob is not None and bob.last_login_at is not None and bob.last_login_at >= before - 1


async def test_a_login_racing_remove_does_not_resurrect_the_operator(
    store: OperatorStore, redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    await store.add("alice", "viewer")
    await store.remove("alice")
    session = await store.open_session(Operator("alice", "viewer"))  # its token was checked just before
    assert not await redis_client.exists(redis_keys.operator("alice"))
    assert await store.session(session.id) is None
    assert await store.list() == []


async def test_bootstrap_sessions_end_when_the_token_changes(
    redis_client: aioredis.Redis, redis_keys: KeySchema
) -> None:
    old = OperatorStore(redis_client, redis_keys, bootstrap_token="first-token")
    session = await old.open_session(BOOTSTRAP_ADMIN)
    assert (await old.session(session.id)) == session
    assert session.operator.bootstrap and session.operator.name == "admin"
    changed = OperatorStore(redis_client, redis_keys, bootstrap_token="second-token")
    assert await changed.session(session.id) is None
    unset = OperatorStore(redis_client, redis_keys)
    assert await unset.session(session.id) is None
    with pytest.raises(OperatorError, match="IVR_OPERATOR_TOKEN"):
        await unset.open_session(BOOTSTRAP_ADMIN)
    assert "first-token" not in await every_value(redis_client, redis_keys)
