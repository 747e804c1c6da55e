"""``ivr drain [--url URL] [--wait SECONDS]``: drain a running ``ivr serve`` before it is stopped.

Asks the server (``POST /api/drain`` with an admin token) to drain exactly as SIGTERM does: ``/readyz`` turns
503 so load balancers and Kubernetes stop sending it calls, new calls that still arrive are refused politely,
live calls go on up to ``IVR_DRAIN_TIMEOUT``, and then the server exits. With ``--wait`` the command stays
until the server has no live call (or has exited), printing the count as it falls: this is what a Kubernetes
``preStop`` hook runs, so the pod leaves the Service before it gets SIGTERM.

Exit codes: 0 drained (or, without ``--wait``, draining started); 1 calls still live when ``--wait`` ran out;
2 the server could not be asked (unreachable, no or wrong token).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

import httpx

from ivr.help_format import ParagraphHelpFormatter

DESCRIPTION = """\
Drain a running `ivr serve` before it is stopped, as SIGTERM would: /readyz turns 503 so the load balancer
(or Kubernetes) stops sending it calls, calls that still arrive are refused politely, live calls go on up to
IVR_DRAIN_TIMEOUT, then the server exits.

  ivr drain              start draining the server on 127.0.0.1:8000
  ivr drain --wait 900   ... and wait for its last call to end (preStop hook)

It authenticates with an admin token: --token, else IVR_OPERATOR_TOKEN (the server's own environment has
it). Exit code: 0 drained (without --wait: draining started), 1 calls still live when --wait ran out, 2 the
server could not be asked."""

#: How often ``--wait`` asks the server for its live calls.
POLL_S = 1.0
#: How often ``--wait`` prints the count when it has not changed.
REPORT_EVERY_S = 15.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``drain`` to the ``ivr`` command line."""
    drain = subparsers.add_parser(
        "drain",
        help="drain a running server (stop taking calls, let live ones finish) before stopping it",
        description=DESCRIPTION,
        formatter_class=ParagraphHelpFormatter,
    )
    drain.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="the server to drain, as this machine reaches it (default http://127.0.0.1:8000)",
    )
    drain.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for the server's live calls to end (default 0: only start the drain)",
    )
    drain.add_argument("--token", default=None, help="an admin token (default $IVR_OPERATOR_TOKEN)")
    drain.set_defaults(func=_main)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text} s is out of range: give 0 to 86400 seconds")
    return value


def _main(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("IVR_OPERATOR_TOKEN", "")
    with httpx.Client(base_url=args.url.rstrip("/"), timeout=httpx.Timeout(5.0)) as http:
        return drain(http, token, args.wait, sys.stdout)


def drain(
    http: httpx.Client,
    token: str,
    wait_s: float,
    out: TextIO,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> int:
    """Start the drain and, for up to ``wait_s`` seconds, follow the live calls down to none."""
    where = str(http.base_url)
    if not token:
        print(
            "ivr drain: no admin token: pass --token or set IVR_OPERATOR_TOKEN "
            "(a token of an operator with the admin role)",
            file=out,
        )
        return 2
    try:
        response = http.post("/api/drain", headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        print(
            f"ivr drain: cannot reach the server at {where} ({exc.__class__.__name__}: {exc}); "
            "is it running, and is --url right?",
            file=out,
        )
        return 2
    if response.status_code != 202:
        print(f"ivr drain: {where} refused: HTTP {response.status_code} {_detail(response)}", file=out)
        return 2
    body = response.json()
    live = int(body.get("live_calls", 0))
    what = "draining started" if body.get("started") else "already draining"
    print(
        f"ivr drain: {body.get('instance') or where}: {what}; {_calls(live)} live, "
        f"ended after {body.get('drain_timeout_s')} s at the latest (IVR_DRAIN_TIMEOUT)",
        file=out,
        flush=True,
    )
    if wait_s <= 0:
        return 0
    start = clock()
    reported_at, reported = start, live
    while live > 0:
        if clock() - start >= wait_s:
            print(f"ivr drain: {_calls(live)} still live after {wait_s:.0f} s", file=out, flush=True)
            return 1
        pause(POLL_S)
        try:
            health = http.get("/healthz")
        except httpx.HTTPError:
            print(
                f"ivr drain: the server has stopped (drained) after {clock() - start:.0f} s",
                file=out,
                flush=True,
            )
            return 0
        if health.status_code != 200:
            continue
        live = int(health.json().get("live_calls", 0))
        if live != reported or clock() - reported_at >= REPORT_EVERY_S:
            print(f"ivr drain: {_calls(live)} live after {clock() - start:.0f} s", file=out, flush=True)
            reported_at, reported = clock(), live
    print(
        f"ivr drain: no live call left after {clock() - start:.0f} s; the server exits", file=out, flush=True
    )
    return 0


def _calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return f"({detail})" if detail else ""
