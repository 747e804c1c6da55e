"""``ivr data load [--flows PATH] [--dataset NAME]``: put the flows' lookup datasets into Redis.

Reads every lookup tool of the flows, checks each dataset's file (key_field and fields must be columns;
errors name the file and the column), and replaces the dataset in the Redis named by ``REDIS_URL`` under
``IVR_REDIS_PREFIX``. Prints a progress line per 1,000 records and a summary per dataset. Exit codes: 0
loaded, 1 a flow or dataset problem or Redis unreachable, 2 unusable configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

from redis.exceptions import RedisError

from ivr.flows.errors import FlowError
from ivr.flows.flowset import FlowSet
from ivr.help_format import ParagraphHelpFormatter
from ivr.redis_url import RedisURLError
from ivr.redis_url import masked as _masked
from ivr.settings import Settings, SettingsError
from ivr.store.client import open_redis
from ivr.store.keys import KeySchema, KeySchemaError
from ivr.tools import datasets as ds

#: ``ivr data --help``, written for a person.
DESCRIPTION = """\
Put the lookup datasets your flows declare (patients, a menu, orders…) into Redis, where the lookup
tools read them.

  ivr data load [--flows PATH] [--dataset ID]

`ivr serve` loads a dataset by itself when Redis does not have it yet (e.g. the embedded Redis); run
`ivr data load` to replace one after its file changed. It checks each file first (every column the
flow names must exist; errors name the file and the column), writes into the Redis at REDIS_URL under
IVR_REDIS_PREFIX, and prints a summary per dataset. Exit code: 0 loaded, 1 a flow or file problem or
Redis unreachable, 2 the settings are unusable."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``data load`` to the ``ivr`` command line."""
    data = subparsers.add_parser(
        "data",
        help="load lookup datasets into Redis",
        description=DESCRIPTION,
        formatter_class=ParagraphHelpFormatter,
    )
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    load = commands.add_parser(
        "load",
        help="load the flows' lookup datasets into Redis",
        description="Load every lookup dataset the flows declare (or one) into Redis, replacing the old one.",
    )
    load.add_argument(
        "--flows",
        type=Path,
        default=None,
        help="folder of *.yaml flows, or one flow file (default: $IVR_FLOWS, else flows/)",
    )
    load.add_argument("--dataset", default=None, help="load only this dataset id")
    load.set_defaults(func=load_command)


def load_command(args: argparse.Namespace) -> int:
    """Entry point for ``ivr data load``."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(
        load_all(args.flows or settings.flows_dir, args.dataset, settings, out=sys.stdout, err=sys.stderr)
    )


def masked(url: str) -> str:
    """The Redis URL without its passwords, for messages (also a Sentinel URL's ``sentinel_password``)."""
    return _masked(url)


async def load_all(path: Path, only: str | None, settings: Settings, *, out: TextIO, err: TextIO) -> int:
    """Load the datasets of the flows at ``path`` into the configured Redis; returns the exit code."""
    if not settings.redis_url:
        print(
            "error: REDIS_URL is not set; `ivr data load` writes into the Redis your app uses "
            "(set REDIS_URL=redis://host:6379/0; `ivr serve` prints the URL of its embedded one, and "
            "loads the datasets that Redis does not hold yet by itself at start-up)",
            file=err,
        )
        return 2
    try:
        keys = KeySchema.for_url(settings.redis_url, settings.redis_prefix)
    except KeySchemaError as exc:
        print(f"error: {exc}", file=err)
        return 2
    if not path.exists():
        print(f"error: {path} does not exist (give a folder of flow files or one .yaml file)", file=err)
        return 1
    try:
        flows = FlowSet.load(path)
        specs = ds.collect(flows)
    except (FlowError, ds.DatasetError) as exc:
        print(exc, file=err)
        return 1
    if only is not None:
        chosen = [s for s in specs if s.name == only]
        if not chosen:
            known = ", ".join(s.name for s in specs) or "none"
            print(f"error: no flow declares a dataset {only!r} (datasets: {known})", file=err)
            return 1
        specs = chosen
    if not specs:
        print(f"no lookup datasets are declared by the flows in {path}", file=out)
        return 0

    try:
        client = open_redis(settings.redis_url, decode_responses=True)
    except RedisURLError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except ValueError as exc:
        print(f"error: REDIS_URL={masked(settings.redis_url)!r} is not a valid Redis URL ({exc})", file=err)
        return 2
    failed = 0
    try:
        for spec in specs:
            print(f"loading {spec.name} from {spec.source} (used by {', '.join(spec.used_by)})", file=out)
            try:
                report = await ds.load(
                    client,
                    keys,
                    spec,
                    progress=lambda n, name=spec.name: print(f"  {name}: {n:,} records written", file=out),
                    warn=lambda text: print(f"  warning: {text}", file=err),
                )
            except ds.DatasetError as exc:
                print(f"error: {exc}", file=err)
                failed += 1
                continue
            print(
                f"  {report.dataset}: {report.records:,} records from {report.rows:,} rows "
                f"({report.duplicates} duplicate keys, {report.skipped} skipped, "
                f"{report.removed} old records removed) in {report.seconds:.2f} s",
                file=out,
            )
    except (RedisError, OSError) as exc:
        print(f"error: cannot write to Redis at {masked(settings.redis_url)}: {exc}", file=err)
        return 1
    finally:
        await client.aclose()
    if failed:
        print(f"FAILED: {failed} of {len(specs)} datasets", file=err)
        return 1
    print(f"OK: {len(specs)} dataset{'s' if len(specs) != 1 else ''} loaded", file=out)
    return 0
