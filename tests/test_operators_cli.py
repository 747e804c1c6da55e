"""`ivr operators add|list|remove`, run in-process through ivr.cli.main against a real Redis."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from ivr.cli import main
from ivr.console.operators import Operator, OperatorStore
from ivr.store.keys import KeySchema

#: Real-Redis fixtures: redis_url, redis_prefix, redis_keys.

TOKEN_LINE = re.compile(r"^    (ivrop_[A-Za-z0-9_-]{43,})$", re.MULTILINE)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_prefix: str) -> Iterator[None]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("IVR_REDIS_PREFIX", redis_prefix)
    monkeypatch.delenv("IVR_OPERATOR_TOKEN", raising=False)
    monkeypatch.delenv("IVR_PUBLIC_URL", raising=False)
    yield


def ivr(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["operators", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def by_token(url: str, keys: KeySchema, token: str) -> Operator | None:
    async def go() -> Operator | None:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            return await OperatorStore(client, keys).by_token(token)
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.mark.usefixtures("env")
def test_add_prints_the_token_once_with_how_to_log_in(
    capsys: pytest.CaptureFixture[str], redis_url: str, redis_keys: KeySchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IVR_PUBLIC_URL", "https://agent.example.com")
    code, out, err = ivr(capsys, "add", "alice", "--role", "approver")
    assert code == 0 and err == ""
    tokens = TOKEN_LINE.findall(out)
    assert len(tokens) == 1
    assert out.startswith("Added operator alice (approver). Their login token:\n")
    assert "will not be shown again" in out
    assert "https://agent.example.com/ops/login" in out and "Authorization: Bearer" in out
    assert by_token(redis_url, redis_keys, tokens[0]) == Operator("alice", "approver")


@pytest.mark.usefixtures("env")
def test_list_shows_a_table_without_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        ivr(capsys, "list")[1] == "No operators yet. Add one with `ivr operators add NAME --role approver`.\n"
    )
    _, first, _ = ivr(capsys, "add", "zoe", "--role", "admin")
    _, second, _ = ivr(capsys, "add", "bob", "--role", "viewer")
    code, out, err = ivr(capsys, "list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "ADDED", "LAST", "LOGIN"]
    assert lines[1].split()[:2] == ["bob", "viewer"] and lines[2].split()[:2] == ["zoe", "admin"]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC\s+never$", lines[1])
    for token in TOKEN_LINE.findall(first + second):
        assert token not in out
    code, out, _ = ivr(capsys, "list", "--json")
    rows = json.loads(out)
    assert [(r["name"], r["role"], r["last_login_at"]) for r in rows] == [
        ("bob", "viewer", None),
        ("zoe", "admin", None),
    ]


@pytest.mark.usefixtures("env")
def test_list_mentions_the_bootstrap_admin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IVR_OPERATOR_TOKEN", "some-secret-value")
    code, out, _ = ivr(capsys, "list")
    assert code == 0 and "bootstrap admin 'admin'" in out and "some-secret-value" not in out


@pytest.mark.usefixtures("env")
def test_remove_revokes_the_token(
    capsys: pytest.CaptureFixture[str], redis_url: str, redis_keys: KeySchema
) -> None:
    _, out, _ = ivr(capsys, "add", "alice", "--role", "viewer")
    token = TOKEN_LINE.findall(out)[0]
    code, out, err = ivr(capsys, "remove", "alice")
    assert (code, err) == (0, "")
    assert out == "Removed operator alice: their token and console sessions no longer work.\n"
    assert by_token(redis_url, redis_keys, token) is None
    code, out, err = ivr(capsys, "remove", "alice")
    assert code == 1 and out == ""
    assert err == "error: there is no operator named 'alice'; see `ivr operators list`\n"


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (("add", "alice", "--role", "boss"), 2, "error: role 'boss' is not one of viewer, approver, admin\n"),
        (("add", "has space", "--role", "viewer"), 2, "is not allowed: use 1-64 letters"),
        (("add", "admin", "--role", "admin"), 2, "is reserved: it is the IVR_OPERATOR_TOKEN bootstrap admin"),
        (("remove", "bad:name"), 2, "is not allowed"),
    ],
)
def test_bad_input_is_one_readable_line(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], code: int, message: str
) -> None:
    got, out, err = ivr(capsys, *argv)
    assert got == code and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


@pytest.mark.usefixtures("env")
def test_adding_an_existing_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert ivr(capsys, "add", "alice", "--role", "viewer")[0] == 0
    code, out, err = ivr(capsys, "add", "alice", "--role", "admin")
    assert code == 1 and out == ""
    assert "operator 'alice' already exists; remove it first (`ivr operators remove alice`)" in err


def test_redis_unreachable_and_unset(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("REDIS_URL", f"redis://:s3cret-pass@127.0.0.1:{port}/0")
    code, out, err = ivr(capsys, "list")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert f"error: cannot reach Redis at 127.0.0.1:{port}/0" in err and "s3cret-pass" not in err
    monkeypatch.delenv("REDIS_URL")
    code, _, err = ivr(capsys, "add", "alice", "--role", "viewer")
    assert code == 2 and "REDIS_URL is not set" in err
