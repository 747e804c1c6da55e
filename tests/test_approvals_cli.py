"""`ivr approvals list|show|approve|deny` against a real Redis."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from ivr.approvals.cli import format_time_left, register, run
from ivr.approvals.store import Approval, ApprovalStore
from ivr.store.keys import KeySchema

#: Real-Redis fixtures: redis_url, redis_prefix, redis_keys, embedded_redis.


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_prefix: str) -> Iterator[None]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("IVR_REDIS_PREFIX", redis_prefix)
    yield


def cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="ivr")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["approvals", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = run(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def on_redis(url: str, keys: KeySchema, action: Any) -> Any:
    async def go() -> Any:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            return await action(ApprovalStore(client, keys))
        finally:
            await client.aclose()

    return asyncio.run(go())


def request(url: str, keys: KeySchema, n: int = 0, **changes: Any) -> Approval:
    fields: dict[str, Any] = {
        "call_sid": f"CA000{n}",
        "instance_id": "inst-a",
        "flow_id": "shop",
        "tool": "refund",
        "call_id": f"fc_{n}",
        "arguments": {"amount": 150 + n, "order": f"A-{n}"},
        "reason": "Refunds over $100 need a manager",
        "timeout_s": 90.0,
    }
    fields.update(changes)
    return on_redis(url, keys, lambda store: store.request(**fields))  # type: ignore[no-any-return]


def get(url: str, keys: KeySchema, aid: str) -> Approval | None:
    return on_redis(url, keys, lambda store: store.get(aid))  # type: ignore[no-any-return]


@pytest.mark.usefixtures("env")
def test_list_empty_and_with_requests(redis_url: str, redis_keys: KeySchema) -> None:
    assert cli("list") == (0, "No approvals are pending.\n", "")
    first = request(redis_url, redis_keys, 1, timeout_s=300.0)
    second = request(redis_url, redis_keys, 2, timeout_s=90.0, arguments={"note": "x" * 200})
    code, out, err = cli("list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "CALL", "TOOL", "ARGUMENTS", "REASON", "TIME", "LEFT"]
    assert lines[1].startswith(second.id) and lines[2].startswith(first.id)  # soonest deadline first
    assert "CA0001" in lines[2] and '{"amount": 151, "order": "A-1"}' in lines[2]
    assert "Refunds over $100 need a manager" in lines[2]
    assert re.search(r"4m \d\ds$|5m 00s$", lines[2])
    assert re.search(r"1m \d\ds$", lines[1])
    assert "…" in lines[1] and "x" * 100 not in lines[1]  # long arguments are clipped

    code, out, _ = cli("list", "--json")
    assert code == 0
    assert [a["id"] for a in json.loads(out)] == [second.id, first.id]


@pytest.mark.usefixtures("env")
def test_show(redis_url: str, redis_keys: KeySchema) -> None:
    approval = request(redis_url, redis_keys)
    code, out, _ = cli("show", approval.id)
    assert code == 0
    assert f"id:         {approval.id}" in out and "status:     pending" in out
    assert '"amount": 150' in out and "left)" in out
    code, out, _ = cli("show", approval.id, "--json")
    assert code == 0 and Approval(**json.loads(out)) == approval
    code, out, err = cli("show", "ap_0000000000000000")
    assert code == 1 and out == "" and "no approval request 'ap_0000000000000000'" in err
    assert "ivr approvals list" in err


@pytest.mark.usefixtures("env")
def test_approve_then_deny_is_refused(redis_url: str, redis_keys: KeySchema) -> None:
    approval = request(redis_url, redis_keys)
    code, out, err = cli("approve", approval.id, "--operator", "alice", "--note", "checked the order")
    assert (code, err) == (0, "")
    assert out.startswith(f"Approved {approval.id} (refund ") and out.rstrip().endswith("as alice.")
    stored = get(redis_url, redis_keys, approval.id)
    assert stored is not None and stored.status == "approved"
    assert stored.decided_by == "alice" and stored.note == "checked the order"

    code, out, err = cli("deny", approval.id, "--operator", "bob")
    assert code == 1 and out == ""
    assert f"approval {approval.id} was already approved by alice at" in err
    assert "cannot be changed" in err
    assert get(redis_url, redis_keys, approval.id) == stored

    code, out, err = cli("show", approval.id)
    assert code == 0 and "approved by alice" in out and "note:       checked the order" in out


@pytest.mark.usefixtures("env")
def test_deny_with_the_default_operator(redis_url: str, redis_keys: KeySchema) -> None:
    approval = request(redis_url, redis_keys)
    code, out, _ = cli("deny", approval.id)
    assert code == 0 and out.startswith(f"Denied {approval.id}")
    stored = get(redis_url, redis_keys, approval.id)
    assert stored is not None and stored.status == "denied"
    assert stored.decided_by  # the user name (or "cli" when there is none)
    code, _, err = cli("deny", request(redis_url, redis_keys, 5).id, "--operator", "timeout")
    assert code == 2 and "give your name" in err


@pytest.mark.usefixtures("env")
def test_expired_and_unknown(redis_url: str, redis_keys: KeySchema) -> None:
    overdue = request(redis_url, redis_keys, timeout_s=10.0, now=time.time() - 60)
    code, out, _ = cli("list")
    assert code == 0 and overdue.id in out and out.rstrip().endswith("overdue")
    code, _, err = cli("approve", overdue.id)
    assert code == 1 and "expired before your decision" in err
    assert get(redis_url, redis_keys, overdue.id).status == "expired"  # type: ignore[union-attr]
    code, _, err = cli("approve", "ap_0000000000000000")
    assert code == 1 and "no approval request" in err
    code, _, err = cli("approve", "bad:id")
    assert code == 1 and "must not contain ':'" in err


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    code, _, err = cli("list")
    assert code == 2
    assert "set REDIS_URL to the server's Redis" in err and "`ivr serve` prints the URL" in err
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("IVR_REDIS_PREFIX", "no colon")
    code, _, err = cli("list")
    assert code == 2 and "IVR_REDIS_PREFIX" in err
    monkeypatch.setenv("IVR_REDIS_PREFIX", "ivr:")
    monkeypatch.setenv("REDIS_URL", "http://example.com")
    code, _, err = cli("list")
    assert code == 2 and "REDIS_URL" in err


def test_unreachable_redis_names_the_host_but_not_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("REDIS_URL", f"redis://:s3cret-pass@127.0.0.1:{port}/0")
    code, out, err = cli("list")
    assert code == 1 and out == ""
    assert f"cannot reach Redis at 127.0.0.1:{port}/0" in err
    assert "s3cret-pass" not in err


def test_a_real_process_exits_with_the_codes(
    redis_url: str, redis_prefix: str, redis_keys: KeySchema
) -> None:
    approval = request(redis_url, redis_keys)
    environment = {**os.environ, "REDIS_URL": redis_url, "IVR_REDIS_PREFIX": redis_prefix}
    command = [sys.executable, "-m", "ivr.approvals.cli"]
    listed = subprocess.run([*command, "list"], env=environment, capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and approval.id in listed.stdout
    approved = subprocess.run(
        [*command, "approve", approval.id, "--operator", "pat"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert approved.returncode == 0, approved.stderr
    again = subprocess.run(
        [*command, "approve", approval.id], env=environment, capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 1 and "already approved by pat" in again.stderr
    missing = subprocess.run([*command], env=environment, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2  # no sub-command: argparse usage error


def test_format_time_left() -> None:
    assert format_time_left(0) == "overdue"
    assert format_time_left(-5) == "overdue"
    assert format_time_left(42.9) == "42s"
    assert format_time_left(65) == "1m 05s"
