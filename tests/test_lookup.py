"""Lookup datasets: `ivr data load` (CSV/JSON, validation, replacement) and the lookup tool, on real Redis."""

from __future__ import annotations

import argparse
import io
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from ivr.flows import FlowSet
from ivr.settings import Settings
from ivr.store.keys import KeySchema
from ivr.tools import data_cli
from ivr.tools.lookup import normalise_key
from ivr.tools.registry import ToolContext, registry_for_flow
from tests.support.redis import redis_prefix, redis_url  # noqa: F401  (fixtures)

PATIENTS_CSV = """\
phone,first_name,last_name,date_of_birth,last_visit
+1 (312) 555-0101,Maria,Gonzalez,1984-02-11,2025-11-03
+1 312-555-0102,James,Okafor,1979-07-23,2025-08-19
,Nobody,Nokey,2000-01-01,
+13125550102,James,Okafor-Smith,1979-07-23,2026-01-02
"""

MENU_JSON = [
    {
        "dish": "Cacio e Pepe",
        "price": 17,
        "vegetarian": True,
        "allergens": ["gluten", "dairy"],
        "secret": "x",
    },
    {"dish": "  Tiramisù ", "price": 9.5, "vegetarian": True, "allergens": [], "secret": "y"},
]

FLOW = """\
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
    fields: [first_name, last_visit]
  - type: lookup
    name: patient_surname
    description: Surname by phone.
    dataset: patients
    source: data/patients.csv
    key_field: phone
    normalize: phone
    fields: [last_name]
  - type: lookup
    name: menu_item
    description: A dish.
    dataset: menu
    source: data/menu.json
    key_field: dish
    normalize: lower
    fields: [price, vegetarian, allergens]
"""


class NoCall:
    def request_hangup(self, reason: str) -> None:
        raise AssertionError("a lookup must not hang up")

    def request_transfer(self, number: str, announcement: str | None) -> None:
        raise AssertionError("a lookup must not transfer")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "patients.csv").write_text(PATIENTS_CSV, encoding="utf-8")
    (tmp_path / "data" / "menu.json").write_text(json.dumps(MENU_JSON), encoding="utf-8")
    (tmp_path / "clinic.yaml").write_text(FLOW, encoding="utf-8")
    return tmp_path


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:  # noqa: F811
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


def settings(url: str, prefix: str) -> Settings:
    return Settings(redis_url=url, redis_prefix=prefix)


async def load(folder: Path, url: str, prefix: str, only: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await data_cli.load_all(folder, only, settings(url, prefix), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def lookup(folder: Path, redis: Redis | None, prefix: str, tool: str, key: str) -> dict[str, Any]:
    flow = next(iter(FlowSet.load(folder)))
    ctx = ToolContext(
        call_sid="CA1",
        flow=flow,
        call=NoCall(),
        caller_number="+13125550101",
        redis=redis,
        keys=KeySchema(prefix),
    )
    outcome = await registry_for_flow(flow).dispatch(tool, json.dumps({"key": key}), "fc1", ctx)
    return dict(json.loads(outcome.output))


def test_normalise_key() -> None:
    assert normalise_key(" +1 (312) 555-0101 ", "phone") == "13125550101"
    assert normalise_key("  Cacio   e PEPE ", "lower") == "cacio e pepe"
    assert normalise_key("  AbC ", "none") == "AbC"


async def test_load_csv_and_json_then_look_up(
    folder: Path,
    redis: Redis,
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    code, out, err = await load(folder, redis_url, redis_prefix)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        f"loading patients from {folder / 'data' / 'patients.csv'} "
        f"(used by clinic/find_patient ({folder / 'clinic.yaml'}), "
        f"clinic/patient_surname ({folder / 'clinic.yaml'}))"
    )
    assert lines[1].startswith(
        "  patients: 2 records from 4 rows (1 duplicate keys, 1 skipped, 0 old records removed) in "
    )
    assert lines[3].startswith(
        "  menu: 2 records from 2 rows (0 duplicate keys, 0 skipped, 0 old records removed)"
    )
    assert lines[-1] == "OK: 2 datasets loaded"
    assert f"{folder / 'data' / 'patients.csv'}:4: empty phone; row skipped" in err
    assert f"{folder / 'data' / 'patients.csv'}:5: phone repeats row 3; the later row wins" in err

    keys = KeySchema(redis_prefix)
    stored = await redis.hgetall(keys.dataset_record("patients", "13125550102"))
    assert stored == {"first_name": "James", "last_visit": "2026-01-02", "last_name": "Okafor-Smith"}
    meta = await redis.hgetall(keys.dataset_meta("patients"))
    assert meta["records"] == "2" and meta["rows"] == "4" and meta["key_field"] == "phone"

    found = await lookup(folder, redis, redis_prefix, "find_patient", "+1 312.555.0101")
    assert found == {"found": True, "first_name": "Maria", "last_visit": "2025-11-03"}
    found = await lookup(folder, redis, redis_prefix, "patient_surname", "+1 312 555 0102")
    assert found == {"found": True, "last_name": "Okafor-Smith"}
    assert await lookup(folder, redis, redis_prefix, "find_patient", "+1 312 555 0199") == {"found": False}
    # no guessing: a number without its country code is another key
    assert await lookup(folder, redis, redis_prefix, "find_patient", "312 555 0101") == {"found": False}

    dish = await lookup(folder, redis, redis_prefix, "menu_item", "cacio E pepe")
    assert dish == {"found": True, "price": "17", "vegetarian": "true", "allergens": "gluten, dairy"}
    assert await lookup(folder, redis, redis_prefix, "menu_item", "tiramisù") == {
        "found": True,
        "price": "9.5",
        "vegetarian": "true",
        "allergens": "",
    }
    assert "secret" not in await redis.hgetall(keys.dataset_record("menu", "tiramisù"))


async def test_reload_replaces_the_dataset(
    folder: Path,
    redis: Redis,
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    assert (await load(folder, redis_url, redis_prefix, "patients"))[0] == 0
    (folder / "data" / "patients.csv").write_text(
        "phone,first_name,last_name,last_visit\n+13125550103,Aisha,Rahman,2026-01-14\n"
        "+13125550101,Maria,Gonzalez,2026-02-20\n",
        encoding="utf-8",
    )
    code, out, _ = await load(folder, redis_url, redis_prefix, "patients")
    assert code == 0 and "(0 duplicate keys, 0 skipped, 1 old records removed)" in out
    assert "menu" not in out
    assert await lookup(folder, redis, redis_prefix, "find_patient", "+13125550102") == {"found": False}
    assert (await lookup(folder, redis, redis_prefix, "find_patient", "+13125550101"))[
        "last_visit"
    ] == "2026-02-20"
    assert (await lookup(folder, redis, redis_prefix, "find_patient", "+13125550103"))[
        "first_name"
    ] == "Aisha"


async def test_progress_line_per_thousand_records(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    rows = "\n".join(f"ORD{i:05d},{'shipped' if i % 2 else 'preparing'}" for i in range(2500))
    (tmp_path / "orders.csv").write_text(f"order,status\n{rows}\n", encoding="utf-8")
    (tmp_path / "shop.yaml").write_text(
        textwrap.dedent(
            """\
            id: shop
            instructions: hi
            tools:
              - {type: lookup, name: order, description: An order., dataset: orders, source: orders.csv,
                 key_field: order, fields: [status]}
            """
        ),
        encoding="utf-8",
    )
    code, out, err = await load(tmp_path, redis_url, redis_prefix)
    assert code == 0, err
    assert [line for line in out.splitlines() if "records written" in line] == [
        "  orders: 1,000 records written",
        "  orders: 2,000 records written",
    ]
    assert "orders: 2,500 records from 2,500 rows" in out


async def test_missing_column_names_file_and_column_and_writes_nothing(
    folder: Path,
    redis: Redis,
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    (folder / "data" / "patients.csv").write_text(
        "telephone,first_name,last_visit\n+1,A,B\n", encoding="utf-8"
    )
    bad_menu = [{"dish": "Soup", "price": 5, "vegetarian": True}]
    (folder / "data" / "menu.json").write_text(json.dumps(bad_menu), encoding="utf-8")
    code, _, err = await load(folder, redis_url, redis_prefix)
    assert code == 1
    csv_path, json_path = folder / "data" / "patients.csv", folder / "data" / "menu.json"
    assert (
        f"error: {csv_path}:1: column 'phone', 'last_name' not found (the flow's key_field/fields name it); "
        "columns are: telephone, first_name, last_visit"
    ) in err
    assert f"error: {json_path}: item 0: column 'allergens' not found" in err
    assert err.rstrip().endswith("FAILED: 2 of 2 datasets")
    assert [key async for key in redis.scan_iter(match=redis_prefix + "*")] == []

    # and the tool, asked before anything was loaded, refuses to guess
    outcome = await lookup(folder, redis, redis_prefix, "find_patient", "+13125550101")
    assert outcome["error"]["type"] == "unavailable"


async def test_configuration_errors(folder: Path, redis_url: str, redis_prefix: str) -> None:  # noqa: F811
    out, err = io.StringIO(), io.StringIO()
    assert await data_cli.load_all(folder, None, Settings(), out=out, err=err) == 2
    assert "REDIS_URL is not set" in err.getvalue()
    code, _, err_text = await load(folder, redis_url, redis_prefix, "nope")
    assert code == 1 and "no flow declares a dataset 'nope' (datasets: patients, menu)" in err_text
    code, _, err_text = await load(folder / "missing", redis_url, redis_prefix)
    assert code == 1 and "does not exist" in err_text
    (folder / "other.yaml").write_text(
        "id: other\ninstructions: hi\ntools:\n  - {type: lookup, name: x, description: x, dataset: patients,"
        " source: data/other.csv, key_field: phone, fields: [a]}\n",
        encoding="utf-8",
    )
    code, _, err_text = await load(folder, redis_url, redis_prefix)
    assert code == 1 and "dataset 'patients': other/x" in err_text and "use one declaration" in err_text
    assert data_cli.masked("redis://:s3cret@db:6380/0") == "redis://:***@db:6380/0"


def test_cli_entry_point_reads_the_environment(
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("IVR_REDIS_PREFIX", redis_prefix)
    parser = argparse.ArgumentParser(prog="ivr")
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "load", "--flows", str(folder), "--dataset", "menu"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "menu: 2 records" in out and out.endswith("OK: 1 dataset loaded\n")
