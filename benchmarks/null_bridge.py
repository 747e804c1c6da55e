"""A deliberately minimal μ-law relay, the floor the real server is compared against. Benchmark only.

It speaks the same two protocols as ``ivr serve`` in passthrough mode and nothing more: Twilio's media
stream in (``start`` opens a model socket whose ``session.update`` names the call, ``media`` becomes
``input_audio_buffer.append``, ``stop`` closes both sides), the model's ``response.output_audio.delta``
becomes ``media`` + ``mark``, ``speech_started`` becomes ``clear``. No parsing beyond prefix checks, no
validation, no records, no logging, hand-written framing (:mod:`wsframe`, zero mask keys) on uvloop.

Run under the same load as the real server, it shows how much of the measured latency and CPU is the
loopback sockets, the event loop and the load generator itself, i.e. what no Python bridge can avoid.

Usage: ``IVR_REALTIME_URL=ws://127.0.0.1:PORT/v1/realtime python benchmarks/null_bridge.py --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import sys
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` as a package when run as a script

import orjson

from benchmarks import wsframe as wf

_MEDIA = b'{"event":"media"'
_MARK = b'{"event":"mark"'
_START = b'{"event":"start"'
_STOP = b'{"event":"stop"'
_DELTA = b'{"type":"response.output_audio.delta"'
_SPEECH_STARTED = b'{"type":"input_audio_buffer.speech_started"'
_PAYLOAD_KEY = b'"payload":"'
_DELTA_KEY = b'"delta":"'


class ModelSide(asyncio.Protocol):
    """Our client socket to the model for one call."""

    def __init__(self, twilio: TwilioSide, host: str, port: int, path: str) -> None:
        self.twilio = twilio
        self.target = (host, port, path)
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.decoder = wf.FrameDecoder()
        self.head = b""
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        host, port, path = self.target
        transport.write(wf.client_request(host, port, path, self.key, {"Authorization": "Bearer bench"}))

    def send(self, payload: bytes) -> None:
        if self.transport is not None:
            self.transport.write(wf.encode(payload, client=True))

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            parts = wf.split_head(self.head)
            if parts is None:
                return
            head, data = parts
            wf.check_server_response(head, self.key)
            self.open = True
            self.twilio.on_model_open()
        twilio = self.twilio
        for opcode, payload in self.decoder.feed(data):
            if opcode == wf.OP_TEXT:
                if payload.startswith(_DELTA):
                    start = payload.find(_DELTA_KEY) + len(_DELTA_KEY)
                    end = payload.find(b'"', start)
                    twilio.play(payload[start:end])
                elif payload.startswith(_SPEECH_STARTED):
                    twilio.clear()
            elif opcode == wf.OP_PING:
                assert self.transport is not None
                self.transport.write(wf.encode(payload, wf.OP_PONG, client=True))
            elif opcode == wf.OP_CLOSE:
                assert self.transport is not None
                self.transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wf.encode(wf.close_payload(1000), wf.OP_CLOSE, client=True))
            self.transport.close()


class TwilioSide(asyncio.Protocol):
    """One Twilio media stream (or a /healthz probe)."""

    def __init__(self, model_url: str) -> None:
        parts = urlsplit(model_url)
        self.model_host = parts.hostname or "127.0.0.1"
        self.model_port = parts.port or 80
        self.model_path = (parts.path or "/") + "?model=gpt-realtime"
        self.transport: asyncio.Transport | None = None
        self.decoder = wf.FrameDecoder()
        self.head = b""
        self.open = False
        self.model: ModelSide | None = None
        self.pending: list[bytes] = []
        self.media_prefix = b""
        self.mark_prefix = b""
        self.clear_message = b""
        self.marks = 0
        self.call_sid = ""
        self.connecting: asyncio.Future[object] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.open:
            self.head += data
            parts = wf.split_head(self.head)
            if parts is None:
                return
            head, data = parts
            if head.startswith(b"GET /healthz "):
                body = b'{"status":"ok"}'
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n%s" % (len(body), body)
                )
                self.transport.close()
                return
            self.transport.write(wf.server_response(wf.parse_client_request(head)))
            self.open = True
        for opcode, payload in self.decoder.feed(data):
            if opcode == wf.OP_TEXT:
                if payload.startswith(_MEDIA):
                    start = payload.find(_PAYLOAD_KEY) + len(_PAYLOAD_KEY)
                    end = payload.find(b'"', start)
                    append = b'{"type":"input_audio_buffer.append","audio":"' + payload[start:end] + b'"}'
                    if self.model is not None and self.model.open:
                        self.model.send(append)
                    else:
                        self.pending.append(append)
                elif payload.startswith(_MARK):
                    pass
                elif payload.startswith(_START):
                    self._on_start(orjson.loads(payload))
                elif payload.startswith(_STOP):
                    self._end()
            elif opcode == wf.OP_PING:
                self.transport.write(wf.encode(payload, wf.OP_PONG))
            elif opcode == wf.OP_CLOSE:
                self._end()

    def _on_start(self, message: dict[str, object]) -> None:
        start = message["start"]
        assert isinstance(start, dict)
        stream_sid = orjson.dumps(start["streamSid"])
        self.call_sid = str(start["callSid"])
        self.media_prefix = b'{"event":"media","streamSid":' + stream_sid + b',"media":{"payload":"'
        self.mark_prefix = b'{"event":"mark","streamSid":' + stream_sid + b',"mark":{"name":"m'
        self.clear_message = wf.encode(b'{"event":"clear","streamSid":' + stream_sid + b"}")
        model = self.model = ModelSide(self, self.model_host, self.model_port, self.model_path)
        loop = asyncio.get_running_loop()
        self.connecting = asyncio.ensure_future(
            loop.create_connection(lambda: model, self.model_host, self.model_port)
        )

    def on_model_open(self) -> None:
        assert self.model is not None
        update = {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": f"Benchmark call {self.call_sid}.",
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}},
                    "output": {"format": {"type": "audio/pcmu"}},
                },
            },
        }
        self.model.send(orjson.dumps(update))
        for append in self.pending:
            self.model.send(append)
        self.pending.clear()

    def play(self, delta_b64: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.marks += 1
        self.transport.write(
            wf.encode(self.media_prefix + delta_b64 + b'"}}')
            + wf.encode(self.mark_prefix + b"%d" % self.marks + b'"}}')
        )

    def clear(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.clear_message)

    def _end(self) -> None:
        if self.model is not None:
            self.model.close()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wf.encode(wf.close_payload(1000), wf.OP_CLOSE))
            self.transport.close()


async def serve(port: int, model_url: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: TwilioSide(model_url), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    model_url = os.environ.get("IVR_REALTIME_URL", "")
    if not model_url.startswith("ws://"):
        print("null_bridge: set IVR_REALTIME_URL=ws://127.0.0.1:PORT/v1/realtime", file=sys.stderr)
        return 2
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(serve(args.port, model_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
