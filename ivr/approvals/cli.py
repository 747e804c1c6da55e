"""``ivr approvals list|show|approve|deny``: decide approval requests from any machine that reaches Redis.

Registered into the top-level ``ivr`` parser by :func:`register`. Connects to ``REDIS_URL`` with the key
prefix ``IVR_REDIS_PREFIX`` (read through :class:`ivr.settings.Settings`). Exit codes: 0 done, 1 refused
(unknown id, already decided, expired, Redis unreachable), 2 unusable configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from redis.asyncio import Redis

from ivr.approvals.store import (
    RESERVED_OPERATORS,
    Approval,
    ApprovalAbandoned,
    ApprovalAlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalStore,
    abandoned_message,
    describe_decision,
)
from ivr.help_format import ParagraphHelpFormatter
from ivr.settings import Settings
from ivr.store.cli_redis import CliRedisError, cli_settings, run_on_redis
from ivr.store.keys import KeySchemaError

__all__ = ["format_record", "format_table", "format_time_left", "main", "register", "run"]

#: ``ivr approvals --help``, written for a person.
DESCRIPTION = """\
See and decide the tool calls that wait for an operator's approval (a booking, a cancellation…), from
any machine that reaches the Redis the servers use (REDIS_URL, IVR_REDIS_PREFIX). The operations
console (/ops/) does the same in a browser.

  ivr approvals list           what is waiting, soonest deadline first
  ivr approvals show ID        one request in full
  ivr approvals approve ID     let it run (--note adds a note for the audit)
  ivr approvals deny ID        refuse it; the agent tells the caller

Exit code: 0 done, 1 refused (unknown id, already decided, expired, Redis unreachable), 2 the settings
are unusable."""

_ARGUMENTS_WIDTH = 48
_REASON_WIDTH = 40


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``approvals`` with ``list``, ``show``, ``approve`` and ``deny`` to the ``ivr`` command line."""
    approvals = subparsers.add_parser(
        "approvals",
        help="list and decide tool calls waiting for a human's approval",
        description=DESCRIPTION,
        formatter_class=ParagraphHelpFormatter,
    )
    commands = approvals.add_subparsers(dest="approvals_command", metavar="COMMAND", required=True)
    listing = commands.add_parser(
        "list",
        help="show pending requests, soonest deadline first",
        description="Show the requests waiting for a decision, soonest deadline first.",
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=command)
    show = commands.add_parser(
        "show",
        help="show one request in full",
        description="Show one approval request in full: the call, the tool, its arguments, the reason.",
    )
    show.add_argument("id", help="approval id (ap_…)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=command)
    default_operator = _default_operator()
    decisions = {
        "approve": "Approve a pending request: the tool runs with exactly the arguments shown.",
        "deny": "Deny a pending request: the tool does not run and the agent tells the caller.",
    }
    for name, verb in (("approve", "approve"), ("deny", "deny")):
        decide = commands.add_parser(name, help=f"{verb} a pending request", description=decisions[name])
        decide.add_argument("id", help="approval id (ap_…)")
        decide.add_argument("--note", default=None, help="a note for the audit log and the agent")
        decide.add_argument(
            "--operator",
            default=default_operator,
            help=f"who decides, for the audit log (default: your user name, {default_operator!r})",
        )
        decide.set_defaults(func=command)


def _default_operator() -> str:
    try:
        return getpass.getuser() or "cli"
    except (KeyError, OSError):
        return "cli"


def command(args: argparse.Namespace) -> int:
    """Entry point used by the ``ivr`` parser."""
    return run(args, out=sys.stdout, err=sys.stderr)


def run(args: argparse.Namespace, *, out: TextIO, err: TextIO, settings: Settings | None = None) -> int:
    """Run one ``approvals`` sub-command; returns the exit code."""
    try:
        settings, keys = cli_settings(settings)
    except CliRedisError as exc:
        print(f"error: {exc}", file=err)
        return exc.code
    retention_s = float(getattr(settings, "retention_days", 30.0)) * 86400.0

    async def work(client: Redis) -> int:
        return await _dispatch(args, ApprovalStore(client, keys, retention_s=retention_s), out, err)

    refusals: dict[type[Exception], int] = {ApprovalNotFound: 1, KeySchemaError: 1}
    return asyncio.run(run_on_redis(settings.redis_url, err, work, refusals))


async def _dispatch(args: argparse.Namespace, store: ApprovalStore, out: TextIO, err: TextIO) -> int:
    name = args.approvals_command
    now = await _server_time(store)
    if name == "list":
        records = await store.pending()
        if args.json:
            print(json.dumps([r.to_json() for r in records], indent=2, ensure_ascii=False), file=out)
        elif not records:
            print("No approvals are pending.", file=out)
        else:
            print(format_table(records, now), file=out)
        return 0
    if name == "show":
        record = await store.get(args.id)
        if record is None:
            raise ApprovalNotFound(args.id)
        if args.json:
            print(json.dumps(record.to_json(), indent=2, ensure_ascii=False), file=out)
        else:
            print(format_record(record, now), file=out)
        return 0
    operator = (args.operator or "").strip()
    if not operator or operator in RESERVED_OPERATORS:
        print(f"error: --operator {args.operator!r} cannot be used; give your name", file=err)
        return 2
    try:
        record = await store.decide(args.id, approve=name == "approve", operator=operator, note=args.note)
    except ApprovalAbandoned as exc:
        print(f"error: {abandoned_message(exc.approval)}", file=err)
        return 1
    except ApprovalAlreadyDecided as exc:
        print(
            f"error: approval {args.id} was already {describe_decision(exc.approval)}; "
            "a decision cannot be changed",
            file=err,
        )
        return 1
    except ApprovalExpired:
        print(
            f"error: approval {args.id} expired before your decision (its deadline passed), "
            "so it was denied; the caller's agent has been told",
            file=err,
        )
        return 1
    verb = "Approved" if record.status == "approved" else "Denied"
    print(
        f"{verb} {record.id} ({record.tool} {_compact(record.arguments)}) as {record.decided_by}.", file=out
    )
    return 0


async def _server_time(store: ApprovalStore) -> float:
    seconds, micros = await store.redis.time()
    return seconds + micros / 1e6


def _compact(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, separators=(", ", ": "), ensure_ascii=False, sort_keys=True)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_time_left(seconds: float) -> str:
    """``"1m 05s"``, ``"42s"``, or ``"overdue"``."""
    if seconds <= 0:
        return "overdue"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def format_table(records: Sequence[Approval], now: float) -> str:
    """A fixed-width table: id, call, tool, arguments, reason, time left."""
    header = ("ID", "CALL", "TOOL", "ARGUMENTS", "REASON", "TIME LEFT")
    rows = [
        (
            r.id,
            r.call_sid,
            r.tool,
            _clip(_compact(r.arguments), _ARGUMENTS_WIDTH),
            _clip(r.reason, _REASON_WIDTH),
            format_time_left(r.time_left(now)),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header, *rows]
    ]
    return "\n".join(lines)


def _stamp(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_record(record: Approval, now: float) -> str:
    """Every field of one request, one per line."""
    status = record.status if record.status == "pending" else describe_decision(record)
    lines = [
        f"id:         {record.id}",
        f"status:     {status}",
        f"call:       {record.call_sid} (flow {record.flow_id or '-'}, instance {record.instance_id or '-'})",
        f"tool:       {record.tool}",
        "arguments:  "
        + json.dumps(record.arguments, indent=2, ensure_ascii=False).replace("\n", "\n            "),
        f"reason:     {record.reason}",
        f"requested:  {_stamp(record.created_at)}",
        f"deadline:   {_stamp(record.deadline)}"
        + (f" ({format_time_left(record.time_left(now))} left)" if record.status == "pending" else ""),
    ]
    if record.note:
        lines.append(f"note:       {record.note}")
    if record.claimed_at is not None and record.executed_at is None:
        lines.append(f"running:    since {_stamp(record.claimed_at)} (no outcome stored yet)")
    if record.executed_at is not None:
        how = "ok" if record.outcome == "ok" else f"failed ({record.error_type or 'error'})"
        lines.append(f"executed:   {_stamp(record.executed_at)}, {how}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ivr.approvals.cli …`` (the same commands as ``ivr approvals …``)."""
    parser = argparse.ArgumentParser(prog="ivr")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(["approvals", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
