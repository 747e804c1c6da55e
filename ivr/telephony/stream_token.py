"""Binding a media stream to the signed voice webhook that asked for it. Sans-I/O.

Why: Twilio signs the media WebSocket upgrade over the bare ``wss://…/twilio/media`` URL, so that signature is
one constant per deployment; whatever arrives in ``start`` (call sid, ``customParameters``) is not covered by
it. The voice webhook *is* signed over the call's own fields, so it issues a token there: an HMAC-SHA256 over
the call sid, the flow, the caller, the called number and an expiry, sent as one more TwiML
``<Parameter>``. Twilio hands the parameters back in ``start.customParameters``; the stream is accepted only
when the token verifies for that call sid and those exact values, and then flow and numbers are taken from
them (they are now authenticated), never from anything else in ``start``.

Token text: ``v1.<expiry, unix seconds>.<base64url HMAC-SHA256, no padding>``. The key comes from
``IVR_STREAM_SECRET``, else is derived from ``TWILIO_AUTH_TOKEN`` (every instance of a deployment shares it,
so a socket may land on any of them). :class:`OnceClaims` is the in-process half of "a call sid streams
once"; the app adds the same claim in Redis for a fleet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "BOUND_PARAMETERS",
    "RESUME_PARAMETER",
    "TOKEN_PARAMETER",
    "OnceClaims",
    "Refusal",
    "StreamBinding",
    "StreamTokens",
    "derive_key",
]

#: The TwiML ``<Parameter>`` carrying the token.
TOKEN_PARAMETER = "ivr_token"
#: The ``<Parameter>`` numbering a resumed call's stream (absent on the first stream; bound by v2 tokens).
RESUME_PARAMETER = "ivr_resume"
#: The ``<Parameter>``s the token covers (with the call sid and the expiry).
BOUND_PARAMETERS = ("flow", "caller", "called")
#: v1: the first stream of a call; v2: a resumed stream, whose number the token binds as well.
_VERSION = "v1"
_RESUME_VERSION = "v2"
_KEY_LABEL = b"ivr media-stream token v1"
#: Base64url of a SHA-256 digest without padding.
_MAC_CHARS = 43


@dataclass(frozen=True, slots=True)
class StreamBinding:
    """What the signed webhook said about a call: the stream may act on these values and nothing else."""

    call_sid: str
    flow: str
    caller: str
    called: str
    #: 0 for the call's first stream; n for the stream that resumes it the n-th time (after its stream
    #: dropped with the instance carrying it: the ``<Connect action>`` handler issues the next one).
    resume: int = 0

    def parameters(self) -> dict[str, str]:
        params = {"flow": self.flow, "caller": self.caller, "called": self.called}
        if self.resume:
            params[RESUME_PARAMETER] = str(self.resume)
        return params


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a stream was not admitted. ``reason`` is a short fixed name (a metric label); ``detail`` is for
    the log and never holds a phone number or the token itself."""

    reason: str
    detail: str = field(default="", compare=False)


def derive_key(stream_secret: str, auth_token: str) -> bytes | None:
    """The token key: from ``IVR_STREAM_SECRET`` when set, else from ``TWILIO_AUTH_TOKEN``; None if neither.

    Either way the key is an HMAC of a fixed label under the secret, so the secret itself is never the key
    (Twilio uses the auth token for its own HMAC-SHA1 signatures).
    """
    secret = stream_secret or auth_token
    if not secret:
        return None
    return hmac.new(secret.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def _message(binding: StreamBinding, expires_at: int) -> bytes:
    """Length-prefixed fields: no value can shift bytes into its neighbour (``a|b``,``c`` ≠ ``a``,``b|c``)."""
    parts: tuple[str, ...] = (binding.call_sid, binding.flow, binding.caller, binding.called, str(expires_at))
    parts = (_RESUME_VERSION, *parts, str(binding.resume)) if binding.resume else (_VERSION, *parts)
    return b"".join(b"%d:%s;" % (len(p.encode("utf-8")), p.encode("utf-8")) for p in parts)


class StreamTokens:
    """Issues and checks stream tokens with one key. ``now`` is wall-clock seconds (tokens cross hosts)."""

    def __init__(self, key: bytes, ttl_s: float) -> None:
        if not key:
            raise ValueError("a stream token key must not be empty")
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s!r}")
        self._key = key
        self.ttl_s = ttl_s

    def _mac(self, binding: StreamBinding, expires_at: int) -> str:
        digest = hmac.new(self._key, _message(binding, expires_at), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def issue(self, binding: StreamBinding, now: float) -> str:
        expires_at = int(now + self.ttl_s)
        version = _RESUME_VERSION if binding.resume else _VERSION
        return f"{version}.{expires_at}.{self._mac(binding, expires_at)}"

    @staticmethod
    def expires_at(token: str) -> int:
        """The expiry written in a well-formed token (raises ValueError otherwise)."""
        return _split(token)[0]

    def verify(self, parameters: Mapping[str, str], call_sid: str, now: float) -> StreamBinding | Refusal:
        """The binding if ``parameters`` (``start.customParameters``) carry a valid, unexpired token for
        ``call_sid`` and exactly the bound values; else a :class:`Refusal` naming why."""
        token = parameters.get(TOKEN_PARAMETER, "")
        if not token:
            return Refusal("missing_token", f"no {TOKEN_PARAMETER} <Parameter> in start")
        try:
            expires_at, mac = _split(token)
        except ValueError as exc:
            return Refusal("malformed_token", str(exc))
        resume = 0
        if token.startswith(_RESUME_VERSION + "."):
            number = parameters.get(RESUME_PARAMETER, "")
            if not (number.isascii() and number.isdigit() and 0 < len(number) < 4 and int(number) > 0):
                return Refusal(
                    "malformed_token", f"a v2 token needs a positive {RESUME_PARAMETER} <Parameter>"
                )
            resume = int(number)
        binding = StreamBinding(
            call_sid,
            parameters.get("flow", ""),
            parameters.get("caller", ""),
            parameters.get("called", ""),
            resume,
        )
        if not hmac.compare_digest(mac, self._mac(binding, expires_at)):
            return Refusal(
                "bad_token", "the token does not match this call sid and its flow/caller/called parameters"
            )
        if now > expires_at:
            return Refusal("expired_token", f"expired {now - expires_at:.0f} s ago")
        return binding


def _split(token: str) -> tuple[int, str]:
    version, _, rest = token.partition(".")
    expiry, _, mac = rest.partition(".")
    if version not in (_VERSION, _RESUME_VERSION):
        raise ValueError(f"token version is not {_VERSION} or {_RESUME_VERSION}")
    if not expiry.isascii() or not expiry.isdigit() or len(expiry) > 12:
        raise ValueError("token expiry is not a number of seconds")
    if len(mac) != _MAC_CHARS:
        raise ValueError("token MAC has the wrong length")
    try:
        base64.urlsafe_b64decode(mac + "=")
    except (binascii.Error, ValueError):
        raise ValueError("token MAC is not base64url") from None
    if not all(c.isascii() and (c.isalnum() or c in "-_") for c in mac):
        raise ValueError("token MAC is not base64url")
    return int(expiry), mac


class OnceClaims:
    """Call sids that already opened a stream on this process, each until its token's expiry.

    A claim past its ``until`` is forgotten: the token it guarded cannot verify any more, so a replay is
    refused as expired instead. At most ``max_entries`` are kept; past that the claims closest to expiry
    go first (a bound on memory under a flood of valid-token streams, which needs valid webhooks anyway).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._until: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def claim(self, call_sid: str, until: float, now: float) -> bool:
        """True if ``call_sid`` was free (it is now claimed until ``until``); False if already claimed."""
        held = self._until.get(call_sid)
        if held is not None and held >= now:
            return False
        self._until[call_sid] = until
        if len(self._until) > self.max_entries:
            self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        live = {sid: until for sid, until in self._until.items() if until >= now}
        room = max(1, self.max_entries * 9 // 10)  # prune with headroom: not again on the next claim
        if len(live) > room:
            live = dict(sorted(live.items(), key=lambda item: item[1])[len(live) - room :])
        self._until = live
