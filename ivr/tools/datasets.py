"""Lookup datasets: which ones the flows declare, reading their CSV/JSON files, and loading them into Redis.

Loading replaces a dataset without a moment where a record that is in both the old and the new file is
missing: every record is rewritten in place (delete + write in one MULTI, so a reader never sees half a
record), then the keys that are not in the new file are deleted, then the metadata is updated. Only the
columns the tools return are stored, so a wide export does not put more personal data into Redis than the
calls need.

At start-up the server loads each declared dataset Redis does not hold yet (:func:`load_missing`), so a fresh
Redis (the embedded one starts empty) answers the first call's lookup; it never replaces a dataset that is
there.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from redis.exceptions import RedisError

from ivr.flows.flowset import FlowSet
from ivr.flows.tool_configs import LookupConfig
from ivr.tools.lookup import normalise_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ivr.store.keys import KeySchema

#: Records written per MULTI/EXEC round trip.
BATCH = 500
#: A progress line is printed every this many rows.
PROGRESS_EVERY = 1000


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message names the file (and row or column) and what to fix."""


@dataclass
class DatasetSpec:
    """One dataset as the flows declare it: where its file is and which columns to keep."""

    name: str
    source: Path
    key_field: str
    normalize: Literal["phone", "lower", "none"]
    #: Union of the ``fields`` of every tool using it, in first-seen order.
    fields: list[str] = field(default_factory=list)
    #: ``flow-id/tool-name (file)`` of every tool that reads it.
    used_by: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadReport:
    dataset: str
    source: Path
    rows: int
    records: int
    duplicates: int
    skipped: int
    removed: int
    seconds: float


def collect(flows: FlowSet) -> list[DatasetSpec]:
    """Every dataset the flows' lookup tools use; conflicting declarations are a :class:`DatasetError`."""
    specs: dict[str, DatasetSpec] = {}
    problems: list[str] = []
    for flow in flows:
        origin = flows.source_of(flow.id) or ""
        folder = Path(origin).parent if origin and Path(origin).exists() else Path(".")
        for tool in flow.tools:
            if not isinstance(tool, LookupConfig):
                continue
            source = (folder / tool.source).resolve()
            user = f"{flow.id}/{tool.name} ({origin})"
            spec = specs.get(tool.dataset)
            if spec is None:
                specs[tool.dataset] = DatasetSpec(
                    tool.dataset, source, tool.key_field, tool.normalize, list(tool.fields), [user]
                )
                continue
            if (spec.source, spec.key_field, spec.normalize) != (source, tool.key_field, tool.normalize):
                problems.append(
                    f"dataset {tool.dataset!r}: {user} reads {source} by {tool.key_field} "
                    f"({tool.normalize}), but {spec.used_by[0]} reads {spec.source} by {spec.key_field} "
                    f"({spec.normalize}); use one declaration or different dataset ids"
                )
                continue
            spec.fields += [f for f in tool.fields if f not in spec.fields]
            spec.used_by.append(user)
    if problems:
        raise DatasetError("\n".join(problems))
    return list(specs.values())


def read_records(spec: DatasetSpec) -> Iterator[tuple[int, dict[str, str]]]:
    """``(row number, record)`` for every row of the file, with only the needed columns, as text.

    Raises :class:`DatasetError` for an unreadable file or a missing column, naming file and column.
    """
    path = spec.source
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"{path}: cannot be read ({exc.strerror or exc}); used by {', '.join(spec.used_by)}"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    wanted = [spec.key_field, *[f for f in spec.fields if f != spec.key_field]]
    if path.suffix.lower() == ".json":
        yield from _json_records(path, text, wanted)
    else:
        yield from _csv_records(path, text, wanted)


def _missing(path: Path, columns: list[str], wanted: list[str], where: str) -> None:
    absent = [c for c in wanted if c not in columns]
    if absent:
        names = ", ".join(repr(c) for c in absent)
        raise DatasetError(
            f"{path}{where}: column {names} not found (the flow's key_field/fields name it); "
            f"columns are: {', '.join(columns) or 'none'}"
        )


def _csv_records(path: Path, text: str, wanted: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    _missing(path, columns, wanted, ":1")
    reader.fieldnames = columns
    try:
        for row in reader:
            yield reader.line_num, {c: (row.get(c) or "").strip() for c in wanted}
    except csv.Error as exc:
        raise DatasetError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None


def _json_records(path: Path, text: str, wanted: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list):
        raise DatasetError(f'{path}: expected a JSON list of objects (or {{"records": [...]}})')
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise DatasetError(f"{path}: item {index} is not an object")
        _missing(path, list(item), wanted, f": item {index}")
        yield index, {c: _text(item[c]) for c in wanted}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


async def load(
    redis: Redis,
    keys: KeySchema,
    spec: DatasetSpec,
    *,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> LoadReport:
    """Replace dataset ``spec.name`` in Redis with the contents of its file (see the module docstring).

    The file is read and checked completely before anything is written, so a bad file never leaves a
    half-loaded dataset.
    """
    started = time.perf_counter()
    records: dict[str, dict[str, str]] = {}
    first_row: dict[str, int] = {}
    rows = duplicates = skipped = 0
    for row, record in read_records(spec):
        rows += 1
        key = normalise_key(record[spec.key_field], spec.normalize)
        if not key:
            skipped += 1
            if warn:
                warn(f"{spec.source}:{row}: empty {spec.key_field}; row skipped")
            continue
        if key in records:
            duplicates += 1
            if warn:
                warn(
                    f"{spec.source}:{row}: {spec.key_field} repeats row {first_row[key]}; the later row wins"
                )
        first_row.setdefault(key, row)
        records[key] = {f: record[f] for f in spec.fields}

    record_prefix = keys.dataset_record(spec.name, "x")[:-1]
    old: set[str] = set()
    async for name in redis.scan_iter(match=record_prefix + "*", count=1000):
        old.add(name)

    written = 0
    items = list(records.items())
    for offset in range(0, len(items), BATCH):
        async with redis.pipeline(transaction=True) as pipe:
            for key, values in items[offset : offset + BATCH]:
                name = keys.dataset_record(spec.name, key)
                pipe.delete(name)
                pipe.hset(name, mapping=values)
            await pipe.execute()
        before = written
        written += len(items[offset : offset + BATCH])
        if progress and written // PROGRESS_EVERY > before // PROGRESS_EVERY:
            progress(written)

    stale = old - {keys.dataset_record(spec.name, key) for key in records}
    stale_list = sorted(stale)
    for offset in range(0, len(stale_list), BATCH):
        await redis.unlink(*stale_list[offset : offset + BATCH])
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.dataset_meta(spec.name))
        pipe.hset(
            keys.dataset_meta(spec.name),
            mapping={
                "source": str(spec.source),
                "key_field": spec.key_field,
                "normalize": spec.normalize,
                "fields": json.dumps(spec.fields),
                "rows": str(rows),
                "records": str(len(records)),
                "loaded_at": f"{time.time():.3f}",
            },
        )
        await pipe.execute()
    return LoadReport(
        spec.name,
        spec.source,
        rows,
        len(records),
        duplicates,
        skipped,
        len(stale),
        time.perf_counter() - started,
    )


async def _presence(redis: Redis, keys: KeySchema, name: str) -> Literal["loaded", "partial", "missing"]:
    """Whether Redis holds dataset ``name``: its metadata (a finished load), only records, or nothing."""
    if await redis.exists(keys.dataset_meta(name)):
        return "loaded"
    record_prefix = keys.dataset_record(name, "x")[:-1]
    async for _name in redis.scan_iter(match=record_prefix + "*", count=1000):
        return "partial"
    return "missing"


async def load_missing(
    redis: Redis, keys: KeySchema, flows: FlowSet, *, log: logging.Logger | None = None
) -> list[LoadReport]:
    """At start-up: load each dataset the flows declare that Redis does not hold yet, so the first call's
    lookup finds its records (a fresh embedded Redis starts empty). A dataset already in Redis is never
    touched, whatever file it came from: replacing one is ``ivr data load``'s job. Problems are logged, not
    raised; a lookup on a dataset that could not be loaded tells the caller records are unavailable."""
    log = log or logging.getLogger("ivr.datasets")
    try:
        specs = collect(flows)
    except DatasetError as exc:
        log.error("the flows' lookup datasets cannot be loaded: %s", exc)
        return []
    reports: list[LoadReport] = []
    for spec in specs:
        try:
            report = await _load_if_missing(redis, keys, spec, log)
        except (RedisError, OSError) as exc:
            log.warning(
                "could not check or load dataset %s in Redis (%s: %s); lookups on it answer that records are "
                "unavailable until it is loaded: run `ivr data load` once Redis is reachable",
                spec.name,
                type(exc).__name__,
                exc,
            )
            continue
        if report is not None:
            reports.append(report)
    return reports


async def _load_if_missing(
    redis: Redis, keys: KeySchema, spec: DatasetSpec, log: logging.Logger
) -> LoadReport | None:
    """Load ``spec`` unless Redis holds it (wholly or in part); the report, or None when not loaded."""
    presence = await _presence(redis, keys, spec.name)
    if presence == "loaded":
        log.info("dataset %s: already in Redis, left as it is (`ivr data load` replaces it)", spec.name)
        return None
    if presence == "partial":
        log.warning(
            "dataset %s: Redis holds some of its records but no sign of a finished load (an "
            "interrupted `ivr data load`?); left as it is. Run `ivr data load --dataset %s` to load it "
            "again.",
            spec.name,
            spec.name,
        )
        return None
    try:
        report = await load(redis, keys, spec, warn=lambda text: log.warning("dataset: %s", text))
    except DatasetError as exc:
        log.error(
            "dataset %s is not in Redis and could not be loaded: %s. Lookups on it will answer that "
            "records are unavailable; fix the file, then run `ivr data load --dataset %s`.",
            spec.name,
            exc,
            spec.name,
        )
        return None
    log.info(
        "dataset %s was not in Redis: loaded %d records from %s in %.2f s (used by %s)",
        spec.name,
        report.records,
        spec.source,
        report.seconds,
        ", ".join(spec.used_by),
    )
    return report
