"""Call state in Redis: the key schema (a public contract), an embedded server, and a write path that
survives Redis outages. See docs/redis.md."""

from ivr.store.embedded import EmbeddedRedis, EmbeddedRedisError, ensure_redis, find_server_binary
from ivr.store.keys import KEY_TYPES, KeySchema, KeySchemaError
from ivr.store.store import CallStore, default_instance_id
from ivr.store.writer import ResilientWriter, WriteOp, WriteQueue

__all__ = [
    "KEY_TYPES",
    "CallStore",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "KeySchema",
    "KeySchemaError",
    "ResilientWriter",
    "WriteOp",
    "WriteQueue",
    "default_instance_id",
    "ensure_redis",
    "find_server_binary",
]
