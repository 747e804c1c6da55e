"""The listening socket of ``ivr serve``, bound before anything starts.

uvicorn binds only after the app's start-up (Redis, listeners) has run and it has been announced, so a
port in use surfaced late, as a log line after "listening on". ``ivr serve`` binds here first, says plainly
what is wrong when it cannot, and hands the bound socket to uvicorn.
"""

from __future__ import annotations

import errno
import socket

MIN_PORT, MAX_PORT = 1, 65535


class BindError(OSError):
    """The address cannot be listened on; ``str()`` says why and what to do."""


def port_number(text: str) -> int:
    """``--port``'s value: a whole number from 1 to 65535 (0 would pick a random port nobody knows)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not MIN_PORT <= port <= MAX_PORT:
        raise ValueError(f"{text} is not a port number (use {MIN_PORT} to {MAX_PORT})")
    return port


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` as uvicorn binds one (not yet listening); :class:`BindError`."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"{where} is already in use (another server, or an earlier `ivr serve` still running); "
                "stop it or pick another port with --port"
            )
        elif exc.errno == errno.EACCES:
            message = f"{where}: permission denied (ports below 1024 need privileges); use another --port"
        elif isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            reason = exc.strerror or exc
            message = f"{where}: {host!r} is not an address of this machine ({reason}); check --host"
        else:
            message = f"cannot listen on {where}: {exc.strerror or exc}"
        raise BindError(message) from None
    sock.set_inheritable(True)
    return sock
