"""Settings.from_env (ivr.settings): defaults, each variable, and errors that name the variable.

Why: a deployment fails at start-up or not at all. A bad value must stop the server with a message that
names the environment variable to fix, never start a server that misbehaves on the first call.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.settings import DEFAULT_REALTIME_MODEL, DEFAULT_REALTIME_URL, Settings, SettingsError


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.openai_api_key == ""
    assert settings.realtime_url == DEFAULT_REALTIME_URL == "wss://api.openai.com/v1/realtime"
    assert settings.realtime_model == DEFAULT_REALTIME_MODEL == "gpt-realtime"
    assert settings.realtime_dialect == "auto"
    assert settings.twilio_account_sid == ""
    assert settings.twilio_auth_token == ""
    assert settings.public_url == ""
    assert settings.flows_dir == Path("flows")
    assert settings.redis_url == ""
    assert settings.verify_signatures is True
    assert settings.twilio_api_base == "https://api.twilio.com"
    assert settings.operator_token == ""
    assert settings.drain_timeout_s == 30.0
    assert settings.model_session_max_s == 25 * 60.0
    assert settings.model_connect_attempts == 6
    assert settings.log_level == "INFO"


def test_empty_strings_mean_defaults() -> None:
    keys = [
        "IVR_REALTIME_URL",
        "IVR_REALTIME_MODEL",
        "IVR_REALTIME_DIALECT",
        "IVR_PUBLIC_URL",
        "IVR_FLOWS",
        "IVR_VERIFY_SIGNATURES",
        "IVR_TWILIO_API_BASE",
        "IVR_DRAIN_TIMEOUT",
        "IVR_MODEL_SESSION_MAX",
        "IVR_MODEL_CONNECT_ATTEMPTS",
        "IVR_LOG_LEVEL",
    ]
    assert Settings.from_env(dict.fromkeys(keys, "")) == Settings()
    assert Settings.from_env({"IVR_VERIFY_SIGNATURES": "  ", "IVR_DRAIN_TIMEOUT": " "}) == Settings()


def test_every_variable_is_read() -> None:
    env = {
        "OPENAI_API_KEY": "sk-test-key",
        "IVR_REALTIME_URL": "ws://127.0.0.1:9000/v1/realtime",
        "IVR_REALTIME_MODEL": "gpt-4o-realtime-preview",
        "IVR_REALTIME_DIALECT": " Beta ",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "secret-token",
        "IVR_PUBLIC_URL": "https://agent.example.com/",
        "IVR_FLOWS": "/srv/flows",
        "REDIS_URL": "redis://127.0.0.1:6379/2",
        "IVR_VERIFY_SIGNATURES": "false",
        "IVR_TWILIO_API_BASE": "http://127.0.0.1:8081/",
        "IVR_OPERATOR_TOKEN": "op-token",
        "IVR_METRICS_PUBLIC": "true",
        "IVR_DRAIN_TIMEOUT": "2.5",
        "IVR_MODEL_SESSION_MAX": "600",
        "IVR_MODEL_CONNECT_ATTEMPTS": "3",
        "IVR_LOG_LEVEL": "debug",
    }
    settings = Settings.from_env(env)
    assert settings == Settings(
        openai_api_key="sk-test-key",
        realtime_url="ws://127.0.0.1:9000/v1/realtime",
        realtime_model="gpt-4o-realtime-preview",
        realtime_dialect="beta",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="secret-token",
        public_url="https://agent.example.com",
        flows_dir=Path("/srv/flows"),
        redis_url="redis://127.0.0.1:6379/2",
        verify_signatures=False,
        twilio_api_base="http://127.0.0.1:8081",
        operator_token="op-token",
        metrics_public=True,
        drain_timeout_s=2.5,
        model_session_max_s=600.0,
        model_connect_attempts=3,
        log_level="DEBUG",
    )


def test_from_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IVR_REALTIME_MODEL", "gpt-realtime-mini")
    monkeypatch.setenv("IVR_DRAIN_TIMEOUT", "7")
    monkeypatch.delenv("IVR_REALTIME_URL", raising=False)
    monkeypatch.delenv("IVR_PUBLIC_URL", raising=False)
    monkeypatch.delenv("IVR_LOG_LEVEL", raising=False)
    monkeypatch.delenv("IVR_REALTIME_DIALECT", raising=False)
    settings = Settings.from_env()
    assert settings.realtime_model == "gpt-realtime-mini"
    assert settings.drain_timeout_s == 7.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_booleans(raw: str, expected: bool) -> None:
    assert Settings.from_env({"IVR_VERIFY_SIGNATURES": raw}).verify_signatures is expected


@pytest.mark.parametrize("dialect", ["auto", "ga", "beta", "GA"])
def test_dialects(dialect: str) -> None:
    assert Settings.from_env({"IVR_REALTIME_DIALECT": dialect}).realtime_dialect == dialect.lower()


@pytest.mark.parametrize("level", ["debug", "Info", "WARNING", "error"])
def test_log_levels(level: str) -> None:
    assert Settings.from_env({"IVR_LOG_LEVEL": level}).log_level == level.upper()


@pytest.mark.parametrize(
    "url",
    ["https://agent.example.com", "https://agent.example.com:8443", "http://127.0.0.1:8000", "https://a.b/"],
)
def test_public_url_origins_are_accepted(url: str) -> None:
    assert Settings.from_env({"IVR_PUBLIC_URL": url}).public_url == url.rstrip("/")


def test_number_parsing() -> None:
    settings = Settings.from_env(
        {"IVR_DRAIN_TIMEOUT": "0", "IVR_MODEL_SESSION_MAX": "1", "IVR_MODEL_CONNECT_ATTEMPTS": "1"}
    )
    assert (settings.drain_timeout_s, settings.model_session_max_s, settings.model_connect_attempts) == (
        0.0,
        1.0,
        1,
    )


# ------------------------------------------------------------------------------------------------
# Bad values: SettingsError naming the variable
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IVR_REALTIME_URL", "https://api.openai.com/v1/realtime"),
        ("IVR_REALTIME_URL", "api.openai.com/v1/realtime"),
        ("IVR_REALTIME_URL", "http://127.0.0.1:9000"),
        ("IVR_REALTIME_DIALECT", "v2"),
        ("IVR_PUBLIC_URL", "https://agent.example.com/ivr"),
        ("IVR_PUBLIC_URL", "https://agent.example.com/twilio/voice"),
        ("IVR_PUBLIC_URL", "agent.example.com"),
        ("IVR_PUBLIC_URL", "ftp://agent.example.com"),
        ("IVR_PUBLIC_URL", "https://"),
        ("IVR_PUBLIC_URL", "https://agent.example.com?x=1"),
        ("IVR_PUBLIC_URL", "https://agent.example.com#top"),
        ("IVR_VERIFY_SIGNATURES", "maybe"),
        ("IVR_VERIFY_SIGNATURES", "2"),
        ("IVR_DRAIN_TIMEOUT", "thirty"),
        ("IVR_DRAIN_TIMEOUT", "30s"),
        ("IVR_DRAIN_TIMEOUT", "-1"),
        ("IVR_MODEL_SESSION_MAX", "0.5"),
        ("IVR_MODEL_SESSION_MAX", "ten minutes"),
        ("IVR_MODEL_CONNECT_ATTEMPTS", "0"),
        ("IVR_MODEL_CONNECT_ATTEMPTS", "many"),
        ("IVR_LOG_LEVEL", "TRACE"),
        ("IVR_LOG_LEVEL", "CRITICAL"),
    ],
)
def test_bad_value_raises_settings_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: value})
    assert str(info.value).startswith(f"{variable}="), str(info.value)


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IVR_DRAIN_TIMEOUT", "nan"),
        ("IVR_MODEL_SESSION_MAX", "nan"),
        ("IVR_MODEL_CONNECT_ATTEMPTS", "nan"),
        ("IVR_MODEL_CONNECT_ATTEMPTS", "inf"),
    ],
)
def test_non_finite_numbers_raise_settings_error(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


# ------------------------------------------------------------------------------------------------
# media_stream_url
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [
        ("https://agent.example.com", "wss://agent.example.com/twilio/media"),
        ("https://agent.example.com/", "wss://agent.example.com/twilio/media"),
        ("https://agent.example.com:8443", "wss://agent.example.com:8443/twilio/media"),
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/twilio/media"),
    ],
)
def test_media_stream_url(public_url: str, expected: str) -> None:
    assert Settings.from_env({"IVR_PUBLIC_URL": public_url}).media_stream_url == expected


def test_media_stream_url_without_public_url_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="IVR_PUBLIC_URL"):
        _ = Settings().media_stream_url


def test_media_stream_url_with_upper_case_scheme() -> None:
    settings = Settings.from_env({"IVR_PUBLIC_URL": "HTTPS://agent.example.com"})
    assert settings.media_stream_url.lower() == "wss://agent.example.com/twilio/media"


def test_with_returns_a_changed_copy() -> None:
    base = Settings()
    changed = base.with_(public_url="https://x.example.com", drain_timeout_s=1.0)
    assert changed.public_url == "https://x.example.com"
    assert changed.drain_timeout_s == 1.0
    assert base.public_url == ""
    with pytest.raises(AttributeError):
        base.public_url = "https://y.example.com"  # type: ignore[misc]
