"""Just enough RFC 6455 for the load generator: handshakes and frames as bytes in, bytes out. Sans-I/O.

Why not the ``websockets`` library: the benchmark drives hundreds of calls from one Python process, and each
call moves about 300 WebSocket messages a second through the generator (caller and fake model together).
The library's per-message cost (roughly 15-25 µs) would make the *generator* the bottleneck long before the
server under test. These helpers cost a few microseconds a message because they do only what the benchmark
needs: whole text frames, ping/pong, close, no extensions.

Shortcut, benchmark only: frames we send as a *client* carry an all-zero masking key. That is a valid frame
(the server unmasks it as usual, so the server under test pays its normal cost), but it lets the generator
skip XOR-ing every payload. Real clients must use random keys; nothing outside ``benchmarks/`` uses this.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

try:  # the C helper that ships with websockets (already a dependency of ivr)
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - pure-Python fallback, slower but correct

    def _apply_mask(data: bytes, mask: bytes) -> bytes:
        n = len(data)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ZERO_MASK = b"\x00\x00\x00\x00"


class HandshakeError(ValueError):
    """The peer's opening handshake was not a WebSocket upgrade we can accept; the message says why."""


class FrameError(ValueError):
    """A frame broke RFC 6455 framing; the message says which rule."""


def accept_value(key: bytes | str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    raw = key.encode() if isinstance(key, str) else key
    return base64.b64encode(hashlib.sha1(raw.strip() + _GUID).digest()).decode()


def client_request(host: str, port: int, path: str, key: str, headers: dict[str, str] | None = None) -> bytes:
    """The HTTP/1.1 upgrade request a client sends first."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def split_head(buffer: bytes) -> tuple[bytes, bytes] | None:
    """``(head, rest)`` once the HTTP head is complete (ends in a blank line), else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > 65536:
            raise HandshakeError("HTTP head longer than 64 KiB without a blank line")
        return None
    return buffer[:end], buffer[end + 4 :]


def _headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep:
            raise HandshakeError(f"malformed header line {line[:60]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


def check_server_response(head: bytes, key: str) -> None:
    """Raise :class:`HandshakeError` unless ``head`` is a 101 answer to our ``key``."""
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1] != b"101":
        raise HandshakeError(f"expected HTTP 101, got {lines[0][:80]!r}")
    got = _headers(lines[1:]).get("sec-websocket-accept")
    if got != accept_value(key):
        raise HandshakeError(f"Sec-WebSocket-Accept {got!r} does not match our key")


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of a client's upgrade request the fake server looks at."""

    path: str
    headers: dict[str, str]


def parse_client_request(head: bytes) -> Request:
    """Parse an upgrade request; raise :class:`HandshakeError` naming what is missing."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        raise HandshakeError(f"expected 'GET <path> HTTP/1.1', got {lines[0][:80]!r}")
    headers = _headers(lines[1:])
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("missing 'Upgrade: websocket'")
    if "sec-websocket-key" not in headers:
        raise HandshakeError("missing Sec-WebSocket-Key")
    return Request(parts[1].decode("latin-1"), headers)


def server_response(request: Request) -> bytes:
    """The 101 answer to an upgrade request (no subprotocol, no extensions)."""
    accept = accept_value(request.headers["sec-websocket-key"])
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode()


def encode(payload: bytes, opcode: int = OP_TEXT, *, client: bool = False) -> bytes:
    """One final frame. ``client=True`` sets the mask bit with an all-zero key (see module docstring)."""
    n = len(payload)
    first = 0x80 | opcode
    mask_bit = 0x80 if client else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = bytes((first, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + n.to_bytes(8, "big")
    if client:
        head += _ZERO_MASK
    return head + payload


def close_payload(code: int = 1000) -> bytes:
    return code.to_bytes(2, "big")


@dataclass(slots=True)
class FrameDecoder:
    """Splits a byte stream into ``(opcode, payload)`` messages; unmasks, joins fragments.

    Control frames (ping, pong, close) come out as they arrive, even between fragments of a message.
    """

    _pending: bytes = b""
    _fragments: list[bytes] = field(default_factory=list)
    _fragment_op: int = -1

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        out: list[tuple[int, bytes]] = []
        size = len(data)
        i = 0
        while size - i >= 2:
            b0 = data[i]
            b1 = data[i + 1]
            length = b1 & 0x7F
            j = i + 2
            if length == 126:
                if size - j < 2:
                    break
                length = int.from_bytes(data[j : j + 2], "big")
                j += 2
            elif length == 127:
                if size - j < 8:
                    break
                length = int.from_bytes(data[j : j + 8], "big")
                j += 8
            masked = b1 & 0x80
            if masked:
                if size - j < 4:
                    break
                key = data[j : j + 4]
                j += 4
            if size - j < length:
                break
            payload = data[j : j + length]
            if masked and key != _ZERO_MASK:
                payload = _apply_mask(payload, key)
            i = j + length
            if b0 & 0x70:
                raise FrameError("reserved bits set (no extension was negotiated)")
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode >= OP_CLOSE:
                out.append((opcode, payload))
            elif opcode == OP_CONT:
                if self._fragment_op < 0:
                    raise FrameError("continuation frame without a message to continue")
                self._fragments.append(payload)
                if fin:
                    out.append((self._fragment_op, b"".join(self._fragments)))
                    self._fragments.clear()
                    self._fragment_op = -1
            elif fin:
                out.append((opcode, payload))
            else:
                self._fragment_op = opcode
                self._fragments = [payload]
        if i < size:
            self._pending = data[i:]
        return out
