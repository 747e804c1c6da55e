"""All runtime configuration, read once from environment variables.

The variable names are a public contract for deployments; README.md documents each one. Nothing else in
the package reads ``os.environ``: code receives a :class:`Settings` object.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from . import tool_env
from .redis_url import redis_url_problem

DEFAULT_REALTIME_URL = "wss://api.openai.com/v1/realtime"
DEFAULT_REALTIME_MODEL = "gpt-realtime"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
#: IVR_ENGINE values: who answers calls.
ENGINES = ("auto", "openai", "local")
#: IVR_ASR values: the offline engine's speech recogniser (ivr/speech/recognizer.py).
ASR_ENGINES = ("whisper", "pocketsphinx")


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable and the fix."""


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; use true or false")


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r} must be a finite number")
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def asr_from_env(env: Mapping[str, str] | None = None) -> str:
    """IVR_ASR: ``whisper`` (default) or ``pocketsphinx``; raises :class:`SettingsError` for anything else."""
    env = os.environ if env is None else env
    value = (env.get("IVR_ASR", "") or "whisper").strip().lower()
    if value not in ASR_ENGINES:
        raise SettingsError(
            f"IVR_ASR={env.get('IVR_ASR')!r} is not a speech recogniser; use whisper (default, accurate) or "
            "pocketsphinx (light, much less accurate)"
        )
    return value


def _origin(raw: str) -> str:
    """``HTTPS://agent.example.com/`` → ``https://agent.example.com`` (scheme lower-cased, no slash)."""
    raw = (raw or "").strip().rstrip("/")
    scheme, sep, rest = raw.partition("://")
    return f"{scheme.lower()}{sep}{rest}" if sep else raw


def _http_env_prefix(env: Mapping[str, str]) -> str:
    try:
        return tool_env.prefix_from(env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


@dataclass(frozen=True)
class Settings:
    """Typed settings with documented defaults (see README.md, "Configuration")."""

    openai_api_key: str = ""
    realtime_url: str = DEFAULT_REALTIME_URL
    realtime_model: str = DEFAULT_REALTIME_MODEL
    #: "auto" picks the dialect from the model name; "ga" or "beta" forces one.
    realtime_dialect: str = "auto"
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    #: The https origin Twilio reaches, e.g. https://agent.example.com (no path).
    public_url: str = ""
    flows_dir: Path = field(default_factory=lambda: Path("flows"))
    redis_url: str = ""
    #: This instance's name in Redis (call ownership, restart reconciliation); default host-port.
    instance_id: str = ""
    #: Prefix of every Redis key (see docs/redis.md).
    redis_prefix: str = "ivr:"
    #: How long ended calls, transcripts, events and decided approvals are kept in Redis.
    retention_days: float = 30.0
    #: Verify X-Twilio-Signature on webhooks and the media upgrade. Turn off only for local experiments.
    verify_signatures: bool = True
    #: Base URL of the Twilio REST API; only changed to reach a regional proxy or a local stand-in.
    twilio_api_base: str = "https://api.twilio.com"
    #: Bearer token for operator endpoints (/api/...). Unset means those endpoints refuse every request.
    operator_token: str = ""
    #: Serve GET /metrics without an operator token (for a Prometheus on a private network).
    metrics_public: bool = False
    #: A call whose media stream dropped with its instance is resumed on another (``<Connect action>``).
    resume_calls: bool = True
    #: Key of the per-call media-stream tokens (docs/security.md); empty: derived from twilio_auth_token.
    stream_secret: str = ""
    #: How long a stream token from the voice webhook stays valid (and a call sid stays claimed).
    stream_token_ttl_s: float = 120.0
    #: Largest HTTP request body read (413 beyond); largest media WebSocket message (close 1009 beyond).
    max_body_bytes: int = 64 * 1024
    max_ws_message_bytes: int = 64 * 1024
    #: Bad Twilio signatures one client may send per window before it gets 429 (Retry-After).
    signature_failure_limit: int = 20
    signature_failure_window_s: float = 60.0
    #: How long live calls may run on after SIGTERM before they are ended.
    drain_timeout_s: float = 30.0
    #: An instance silent this long is lost: a survivor ends its calls (instance-lost); heartbeats go out
    #: every min(5, this / 3) seconds.
    instance_lost_after_s: float = 15.0
    #: Roll the model socket over to a fresh one after this long (providers cap sessions at ~30-60 min).
    model_session_max_s: float = 25 * 60.0
    #: Attempts to (re)open the model socket before the call is ended with an apology.
    model_connect_attempts: int = 6
    log_level: str = "INFO"
    #: "openai": the flow's OpenAI model; "local": the offline engine for every call; "auto": OpenAI when
    #: OPENAI_API_KEY is set, else the offline engine.
    engine: str = "auto"
    #: Base URL of the OpenAI HTTP API, for the Chat Completions audio models (an Azure or gateway URL works).
    openai_base_url: str = DEFAULT_OPENAI_BASE_URL
    #: http tools may read only ${VARIABLES} starting with this (never one ivr itself uses; ivr/tool_env.py).
    http_env_prefix: str = tool_env.DEFAULT_PREFIX
    #: The offline engine's speech recogniser: "whisper" (default) or "pocketsphinx" (light, less accurate).
    asr: str = "whisper"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        settings = cls(
            openai_api_key=env.get("OPENAI_API_KEY", ""),
            realtime_url=env.get("IVR_REALTIME_URL", "") or DEFAULT_REALTIME_URL,
            realtime_model=env.get("IVR_REALTIME_MODEL", "") or DEFAULT_REALTIME_MODEL,
            realtime_dialect=(env.get("IVR_REALTIME_DIALECT", "") or "auto").strip().lower(),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN", ""),
            public_url=_origin(env.get("IVR_PUBLIC_URL", "")),
            flows_dir=Path(env.get("IVR_FLOWS", "") or "flows"),
            redis_url=env.get("REDIS_URL", ""),
            redis_prefix=env.get("IVR_REDIS_PREFIX", "") or "ivr:",
            instance_id=env.get("IVR_INSTANCE_ID", "").strip(),
            retention_days=_float(env, "IVR_RETENTION_DAYS", 30.0, minimum=0.01),
            verify_signatures=_bool(env, "IVR_VERIFY_SIGNATURES", True),
            twilio_api_base=(env.get("IVR_TWILIO_API_BASE", "") or "https://api.twilio.com").rstrip("/"),
            operator_token=env.get("IVR_OPERATOR_TOKEN", ""),
            metrics_public=_bool(env, "IVR_METRICS_PUBLIC", False),
            resume_calls=_bool(env, "IVR_RESUME_CALLS", True),
            stream_secret=env.get("IVR_STREAM_SECRET", ""),
            stream_token_ttl_s=_float(env, "IVR_STREAM_TOKEN_TTL", 120.0, minimum=1.0),
            max_body_bytes=_int(env, "IVR_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
            max_ws_message_bytes=_int(env, "IVR_MAX_WS_MESSAGE_BYTES", 64 * 1024, minimum=1024),
            signature_failure_limit=_int(env, "IVR_SIGNATURE_FAILURE_LIMIT", 20, minimum=1),
            signature_failure_window_s=_float(env, "IVR_SIGNATURE_FAILURE_WINDOW", 60.0, minimum=1.0),
            drain_timeout_s=_float(env, "IVR_DRAIN_TIMEOUT", 30.0),
            instance_lost_after_s=_float(env, "IVR_INSTANCE_LOST_AFTER", 15.0, minimum=1.0),
            model_session_max_s=_float(env, "IVR_MODEL_SESSION_MAX", 25 * 60.0, minimum=1.0),
            model_connect_attempts=_int(env, "IVR_MODEL_CONNECT_ATTEMPTS", 6, minimum=1),
            log_level=(env.get("IVR_LOG_LEVEL", "") or "INFO").upper(),
            engine=(env.get("IVR_ENGINE", "") or "auto").strip().lower(),
            openai_base_url=(env.get("IVR_OPENAI_BASE_URL", "") or DEFAULT_OPENAI_BASE_URL).rstrip("/"),
            http_env_prefix=_http_env_prefix(env),
            asr=asr_from_env(env),
        )
        settings.check()
        return settings

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (handy in tests and the CLI)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def check(self) -> None:
        """Raise :class:`SettingsError` naming the variable when a value cannot work."""
        scheme = urlsplit(self.realtime_url).scheme
        if scheme not in {"ws", "wss"}:
            raise SettingsError(
                f"IVR_REALTIME_URL={self.realtime_url!r} must start with wss:// (or ws:// for a local server)"
            )
        if self.realtime_dialect not in {"auto", "ga", "beta"}:
            raise SettingsError(f"IVR_REALTIME_DIALECT={self.realtime_dialect!r}: use auto, ga or beta")
        if self.redis_url and (redis_problem := redis_url_problem(self.redis_url)):
            raise SettingsError(redis_problem)
        if self.public_url:
            parts = urlsplit(self.public_url)
            if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path not in {"", "/"}:
                raise SettingsError(
                    f"IVR_PUBLIC_URL={self.public_url!r} must be an origin like https://agent.example.com "
                    "(scheme and host, no path)"
                )
            if parts.query or parts.fragment:
                raise SettingsError(f"IVR_PUBLIC_URL={self.public_url!r} must not carry a query or fragment")
        if self.engine not in ENGINES:
            raise SettingsError(f"IVR_ENGINE={self.engine!r}: use auto, openai or local")
        if urlsplit(self.openai_base_url).scheme not in {"http", "https"}:
            raise SettingsError(
                f"IVR_OPENAI_BASE_URL={self.openai_base_url!r} must start with https:// (or http:// for a "
                "local server)"
            )
        if self.asr not in ASR_ENGINES:
            raise SettingsError(f"IVR_ASR={self.asr!r}: use whisper or pocketsphinx")
        if self.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError(f"IVR_LOG_LEVEL={self.log_level!r}: use DEBUG, INFO, WARNING or ERROR")

    @property
    def uses_local_engine(self) -> bool:
        """Every call runs on the offline engine (IVR_ENGINE=local, or auto without an API key)."""
        return self.engine == "local" or (self.engine == "auto" and not self.openai_api_key)

    @property
    def media_stream_url(self) -> str:
        """The WebSocket URL written into TwiML: wss:// for an https origin, ws:// for a local http one."""
        origin = self.public_url
        if origin.startswith("https://"):
            return "wss://" + origin[len("https://") :] + "/twilio/media"
        if origin.startswith("http://"):
            return "ws://" + origin[len("http://") :] + "/twilio/media"
        raise SettingsError("IVR_PUBLIC_URL is not set; set it to the https origin Twilio reaches")
