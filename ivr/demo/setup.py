"""Before a demo call: the output folder checked, the number to dial, the data the flows need, a booking
to change (cancel and move scenarios), a free port, and the server's start-up warnings that do not apply."""

from __future__ import annotations

import logging
import secrets
import socket
from pathlib import Path

from ..flows import Flow, FlowSet
from ..store.keys import KeySchema
from ..tools import datasets as ds
from .options import DemoOptions, Progress

#: The number the demo dials for a default flow that claims none (no shipped flow claims it).
UNCLAIMED_NUMBER = "+15550100000"


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def check_out_dir(out_dir: Path) -> None:
    """Fail before the call, not after it, when the recording cannot be written there."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SystemExit(
            f"ivr demo: --out {out_dir} is a file; --out takes a folder (demo-call.wav and demo-call.json "
            "are written into it). Pass a folder, e.g. --out ."
        )
    probe = out_dir if out_dir.exists() else next((p for p in out_dir.parents if p.exists()), Path("."))
    if not probe.is_dir():
        raise SystemExit(f"ivr demo: --out {out_dir}: {probe} is a file, not a folder; pass a folder")


def dialled_number(flow: Flow, flows: FlowSet) -> str:
    """The number to call for ``flow``: its first number, or one no flow claims for the default flow."""
    if flow.numbers:
        return str(flow.numbers[0])
    if flows.default is not None and flows.default.id == flow.id:
        claimed = {str(n) for f in flows for n in f.numbers}
        number = next(n for n in (UNCLAIMED_NUMBER, "+15550100001", "+15550100002") if n not in claimed)
        return number
    raise SystemExit(
        f"ivr demo: flow {flow.id!r} has no phone number and is not the default flow, so no call reaches "
        "it; add one under numbers: or mark it default: true"
    )


class NotForTheDemo(logging.Filter):
    """Drops the server's start-up warnings that describe a production setup, not this demo (plain http on
    loopback, the offline engine chosen on purpose, generated tokens)."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__()
        self.messages = set(messages)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.messages


async def load_datasets(flows: FlowSet, redis_url: str, keys: KeySchema, progress: Progress) -> None:
    from ..store.client import open_redis

    client = open_redis(redis_url, decode_responses=True)
    try:
        for spec in ds.collect(flows):
            report = await ds.load(client, keys, spec, progress=lambda n: None, warn=progress)
            progress(f"loaded dataset {report.dataset}: {report.records} records from {spec.source}")
    finally:
        await client.aclose()


async def seed_booking(
    flow: Flow, service: str, options: DemoOptions, redis_url: str, keys: KeySchema
) -> str:
    """Book the first free slot for the caller through the flow's own booking tool (for cancel and move)."""
    from ..store.client import open_redis
    from ..tools.booking import BookingTool
    from ..tools.registry import ToolContext

    config = next((t for t in flow.tools if getattr(t, "type", None) == "booking"), None)
    if config is None:
        raise SystemExit(f"ivr demo: flow {flow.id!r} has no booking tool, so there is no booking to change")

    class _NoCall:
        def request_hangup(self, reason: str) -> None: ...
        def request_transfer(self, number: str, announcement: str | None) -> None: ...

    client = open_redis(redis_url, decode_responses=True)
    try:
        ctx = ToolContext(
            call_sid="CA" + secrets.token_hex(16),
            flow=flow,
            call=_NoCall(),
            caller_number=options.caller_number,
            redis=client,
            keys=keys,
        )
        tool = BookingTool(config)  # type: ignore[arg-type]
        found = await tool.run({"action": "find_slots", "service": service}, ctx)
        slots = found.get("slots") or []
        if not slots:
            raise SystemExit(f"ivr demo: no free {service} slot to book before the call")
        start = slots[-1]["start"] if isinstance(slots[-1], dict) else str(slots[-1])
        booked = await tool.run(
            {"action": "book", "service": service, "start": start, "name": options.caller_name}, ctx
        )
        return str(booked["booking_id"])
    finally:
        await client.aclose()
