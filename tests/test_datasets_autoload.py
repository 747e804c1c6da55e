"""At start-up the server loads the lookup datasets its flows declare when Redis does not hold them yet.

Why: the embedded Redis starts empty, so `ivr serve` + `ivr call` used to fail the dental clinic's first
lookup ("records cannot be looked up right now") until someone ran `ivr data load`. A dataset already in
Redis must never be replaced at start-up: it may come from a newer file an operator loaded on purpose.
All against a real Redis (tests/conftest.py) and, for the end-to-end check, the real app on a real socket.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from ivr.caller.client import CallOptions, SimulatedCall
from ivr.flows import FlowSet
from ivr.store.keys import KeySchema
from ivr.tools.datasets import load_missing
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, OPERATOR_TOKEN, make_settings, running_server

ROOT = Path(__file__).resolve().parent.parent
PATIENTS = "phone,first_name,last_name\n+1 312-555-0101,Maria,Gonzalez\n+1 312-555-0102,James,Okafor\n"
MENU = '[{"dish": "Soup", "price": 5}, {"dish": "Tiramisu", "price": 9}]'
FLOW = textwrap.dedent(
    """\
    id: clinic
    instructions: hi
    tools:
      - type: lookup
        name: find_patient
        description: Find a patient by phone.
        dataset: patients
        source: data/patients.csv
        key_field: phone
        normalize: phone
        fields: [first_name, last_name]
      - type: lookup
        name: menu_item
        description: A dish.
        dataset: menu
        source: data/menu.json
        key_field: dish
        normalize: lower
        fields: [price]
    """
)


def flows_in(folder: Path, *, menu: str = MENU) -> FlowSet:
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "patients.csv").write_text(PATIENTS, encoding="utf-8")
    (folder / "data" / "menu.json").write_text(menu, encoding="utf-8")
    (folder / "clinic.yaml").write_text(FLOW, encoding="utf-8")
    return FlowSet.load(folder)


def messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "ivr.datasets")


async def test_missing_datasets_are_loaded_and_logged(
    tmp_path: Path, redis_client: Redis, redis_keys: KeySchema, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ivr.datasets")
    reports = await load_missing(redis_client, redis_keys, flows_in(tmp_path))

    assert sorted((r.dataset, r.records) for r in reports) == [("menu", 2), ("patients", 2)]
    maria = await redis_client.hgetall(redis_keys.dataset_record("patients", "13125550101"))
    assert maria == {"first_name": "Maria", "last_name": "Gonzalez"}
    assert await redis_client.hget(redis_keys.dataset_record("menu", "tiramisu"), "price") == "9"
    assert (
        await redis_client.exists(redis_keys.dataset_meta("patients"), redis_keys.dataset_meta("menu")) == 2
    )
    log = messages(caplog)
    assert (
        f"dataset patients was not in Redis: loaded 2 records from {tmp_path / 'data' / 'patients.csv'}"
        in log
    )
    assert "used by clinic/find_patient" in log
    assert "Maria" not in log and "555" not in log  # names the file, never what is in it


async def test_a_dataset_already_in_redis_is_never_touched(
    tmp_path: Path, redis_client: Redis, redis_keys: KeySchema, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ivr.datasets")
    # An operator loaded patients from another file: one record, which the flow's file does not have.
    other = redis_keys.dataset_record("patients", "13125550199")
    await redis_client.hset(other, mapping={"first_name": "Ines", "last_name": "Silva"})
    await redis_client.hset(redis_keys.dataset_meta("patients"), mapping={"source": "/elsewhere.csv"})

    reports = await load_missing(redis_client, redis_keys, flows_in(tmp_path))

    assert [r.dataset for r in reports] == ["menu"]  # only the missing one
    assert await redis_client.hgetall(other) == {"first_name": "Ines", "last_name": "Silva"}
    assert not await redis_client.exists(redis_keys.dataset_record("patients", "13125550101"))
    assert await redis_client.hget(redis_keys.dataset_meta("patients"), "source") == "/elsewhere.csv"
    assert "dataset patients: already in Redis, left as it is" in messages(caplog)

    # a second start-up changes nothing at all
    assert await load_missing(redis_client, redis_keys, flows_in(tmp_path)) == []


async def test_records_without_a_finished_load_are_left_alone_with_a_warning(
    tmp_path: Path, redis_client: Redis, redis_keys: KeySchema, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ivr.datasets")
    half = redis_keys.dataset_record("patients", "13125550101")
    await redis_client.hset(half, mapping={"first_name": "Half"})

    reports = await load_missing(redis_client, redis_keys, flows_in(tmp_path))

    assert [r.dataset for r in reports] == ["menu"]
    assert await redis_client.hgetall(half) == {"first_name": "Half"}
    warnings = [r for r in caplog.records if r.name == "ivr.datasets" and r.levelno == logging.WARNING]
    assert any("ivr data load --dataset patients" in r.getMessage() for r in warnings)


async def test_a_broken_file_is_reported_and_the_others_still_load(
    tmp_path: Path, redis_client: Redis, redis_keys: KeySchema, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ivr.datasets")
    flows = flows_in(tmp_path, menu='[{"name": "Soup"}]')  # no "dish" column

    reports = await load_missing(redis_client, redis_keys, flows)

    assert [r.dataset for r in reports] == ["patients"]
    assert not await redis_client.exists(redis_keys.dataset_meta("menu"))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert (
        str(tmp_path / "data" / "menu.json") in errors[0] and "column 'dish', 'price' not found" in errors[0]
    )
    assert "ivr data load --dataset menu" in errors[0]


async def test_serve_then_call_finds_the_caller_on_the_first_lookup(
    redis_url: str, redis_prefix: str
) -> None:
    """The README's path: shipped flows, an empty Redis, the offline engine, a call from a known patient."""
    settings = make_settings(
        openai_api_key="",
        engine="local",
        flows_dir=ROOT / "flows",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
    )
    found = asyncio.Event()
    tools: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "tool.called" and event.get("name") == "find_patient":
            tools.append(event)
            found.set()

    async with running_server(settings) as server:
        async with httpx.AsyncClient(timeout=90) as http:  # answered once start-up (datasets, models) is done
            assert (await http.get(server.base_url + "/healthz")).status_code == 200
        options = CallOptions(
            base_url=server.base_url,
            from_number="+1 (312) 555-0101",
            to_number="+15551230001",
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            operator_token=OPERATOR_TOKEN,
            duration_s=30.0,
            on_event=on_event,
        )
        call = SimulatedCall(options)
        task = asyncio.create_task(call.run())
        try:
            await asyncio.wait_for(found.wait(), 20)
        finally:
            await call.hang_up()
            await task
    assert tools[0]["ok"] is True, tools
    assert '"first_name":"Maria"' in str(tools[0]["output"]).replace(" ", "")
