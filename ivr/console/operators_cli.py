"""``ivr operators add|list|remove``: who may use the console and the operator API, with which role.

Registered into the top-level ``ivr`` parser by :func:`register`. Works on the Redis at ``REDIS_URL`` under
``IVR_REDIS_PREFIX``, like ``ivr approvals``. Exit codes: 0 done, 1 refused (name taken, unknown operator,
Redis unreachable), 2 unusable input or configuration (bad name or role, no REDIS_URL).

Roles: viewer (sees everything), approver (also approves/denies, hangs up, transfers), admin (everything).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from redis.asyncio import Redis

from ivr.help_format import ParagraphHelpFormatter
from ivr.settings import Settings
from ivr.store.cli_redis import CliRedisError, cli_settings, run_on_redis

from .operators import ROLES, OperatorError, OperatorExists, OperatorInfo, OperatorStore, check_role

__all__ = ["format_operators", "main", "register", "run"]

_DESCRIPTION = """\
Who may use the operations console (/ops/) and the operator API (/api/...), with which role:
  viewer    sees live calls, history, approvals and the fleet
  approver  also approves or denies tool calls, hangs up, transfers live calls
  admin     everything

`add` prints the operator's login token once (Redis keeps only its SHA-256). Works on the Redis at
REDIS_URL under IVR_REDIS_PREFIX. IVR_OPERATOR_TOKEN on the servers stays a bootstrap admin named 'admin'.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``operators`` with ``add``, ``list`` and ``remove`` to the ``ivr`` command line."""
    operators = subparsers.add_parser(
        "operators",
        help="add, list and remove console operators (names, roles, login tokens)",
        description=_DESCRIPTION,
        formatter_class=ParagraphHelpFormatter,
    )
    commands = operators.add_subparsers(dest="operators_command", metavar="COMMAND", required=True)
    add = commands.add_parser(
        "add",
        help="add an operator and print their login token (once)",
        description="Add an operator with a role and print their login token. It is shown once only.",
    )
    add.add_argument("name", help="1-64 letters, digits, '.', '_' or '-'; recorded with their decisions")
    add.add_argument("--role", required=True, metavar="|".join(ROLES), help="what the operator may do")
    add.set_defaults(func=command)
    listing = commands.add_parser(
        "list",
        help="show operators: name, role, added, last login",
        description="Show the operators: name, role, when they were added and last logged in.",
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=command)
    remove = commands.add_parser(
        "remove",
        help="remove an operator; their token and sessions stop working",
        description="Remove an operator: their token and console sessions stop working at once.",
    )
    remove.add_argument("name", help="the operator's name, as `ivr operators list` shows it")
    remove.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Entry point used by the ``ivr`` parser."""
    return run(args, out=sys.stdout, err=sys.stderr)


def run(args: argparse.Namespace, *, out: TextIO, err: TextIO, settings: Settings | None = None) -> int:
    """Run one ``operators`` sub-command; returns the exit code."""
    try:
        settings, keys = cli_settings(settings)
        if args.operators_command == "add":
            check_role(args.role)
    except (CliRedisError, OperatorError) as exc:
        print(f"error: {exc}", file=err)
        return exc.code if isinstance(exc, CliRedisError) else 2

    async def work(client: Redis) -> int:
        return await _dispatch(args, OperatorStore(client, keys), settings, out, err)

    refusals: dict[type[Exception], int] = {OperatorExists: 1, OperatorError: 2}
    return asyncio.run(run_on_redis(settings.redis_url, err, work, refusals))


async def _dispatch(
    args: argparse.Namespace, store: OperatorStore, settings: Settings, out: TextIO, err: TextIO
) -> int:
    name = args.operators_command
    if name == "add":
        role = check_role(args.role)
        token = await store.add(args.name, role)
        login = f"{settings.public_url}/ops/login" if settings.public_url else "the console's /ops/login page"
        print(f"Added operator {args.name} ({role}). Their login token:", file=out)
        print(f"\n    {token}\n", file=out)
        print("It is stored only as a hash and will not be shown again: hand it over now.", file=out)
        print(
            f"Log in at {login} with it, or send `Authorization: Bearer <token>` to the /api/… routes.",
            file=out,
        )
        return 0
    if name == "list":
        operators = await store.list()
        if args.json:
            rows = [
                {"name": o.name, "role": o.role, "created_at": o.created_at, "last_login_at": o.last_login_at}
                for o in operators
            ]
            print(json.dumps(rows, indent=2), file=out)
            return 0
        if operators:
            print(format_operators(operators), file=out)
        else:
            print("No operators yet. Add one with `ivr operators add NAME --role approver`.", file=out)
        if settings.operator_token:
            print("(IVR_OPERATOR_TOKEN is set here: it logs in as the bootstrap admin 'admin'.)", file=out)
        return 0
    if not await store.remove(args.name):
        print(f"error: there is no operator named {args.name!r}; see `ivr operators list`", file=err)
        return 1
    print(f"Removed operator {args.name}: their token and console sessions no longer work.", file=out)
    return 0


def _stamp(ts: float | None) -> str:
    return "never" if not ts else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_operators(operators: Sequence[OperatorInfo]) -> str:
    """A fixed-width table: name, role, when added, last login (console or API) — never a token."""
    header = ("NAME", "ROLE", "ADDED", "LAST LOGIN")
    rows = [(o.name, o.role, _stamp(o.created_at), _stamp(o.last_login_at)) for o in operators]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header, *rows]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ivr.console.operators_cli …`` (the same commands as ``ivr operators …``)."""
    parser = argparse.ArgumentParser(prog="ivr")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(["operators", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
