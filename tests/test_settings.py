"""Every setting is documented in .env.example, a half-set mode is refused, and a
wrong Supabase key is named at start-up."""

import logging
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from backend.app import create_app
from backend.settings import Settings, key_role

ENV_EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"


def test_env_example_lists_every_setting() -> None:
    text = ENV_EXAMPLE.read_text()
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in text]
    assert missing == []


def test_env_example_is_loadable_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    settings = Settings(_env_file=ENV_EXAMPLE)
    assert settings.node_id == "node-1"
    assert settings.fee_bps == 2000


@pytest.mark.parametrize(
    "values",
    [
        {"supabase_url": "https://example.supabase.co"},
        {"supabase_service_role_key": "secret-key-value"},
    ],
)
def test_a_half_configured_supabase_mode_is_a_clear_error(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, **values)
    assert "SUPABASE" in str(refused.value)
    assert "secret-key-value" not in str(refused.value)


def test_a_node_with_a_redis_url_and_no_bus_key_is_refused() -> None:
    settings = Settings(_env_file=None, redis_url="redis://127.0.0.1:6379/0")
    with pytest.raises(RuntimeError, match="BUS_KEY"):
        create_app(settings)


def test_a_placeholder_secret_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, bus_key="change-me-to-a-long-random-string")
    assert "placeholder" in str(refused.value)
    assert "change-me-to" not in str(refused.value)


def _supabase_key(role: str) -> str:
    return jwt.encode({"iss": "supabase", "ref": "example", "role": role}, "k" * 32, "HS256")


def test_supabase_key_is_the_server_key_under_its_seed_file_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY", raising=False)
    monkeypatch.setenv("SUPABASE_URL", "https://example.supabase.co")
    monkeypatch.setenv("SUPABASE_KEY", _supabase_key("service_role"))
    settings = Settings(_env_file=None)
    assert settings.supabase_service_role_key is not None
    assert settings.supabase_key_role == "service_role"
    # Both set: the explicit name wins.
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", _supabase_key("anon"))
    assert Settings(_env_file=None).supabase_key_role == "anon"


@pytest.mark.parametrize(
    ("key", "role"),
    [
        (_supabase_key("anon"), "anon"),
        (_supabase_key("service_role"), "service_role"),
        ("sb_publishable_abc123", "anon"),
        ("sb_secret_abc123", "service_role"),
        ("not-a-jwt", None),
        ("a.%%%.c", None),
    ],
)
def test_the_key_role_is_read_from_the_key(key: str, role: str | None) -> None:
    assert key_role(key) == role


def test_an_anon_key_is_named_at_start_up_without_showing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    anon = _supabase_key("anon")
    settings = Settings(
        _env_file=None, supabase_url="https://example.supabase.co", supabase_key=anon
    )
    with caplog.at_level(logging.WARNING, logger="backend.app"):
        create_app(settings)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'anon'" in text and "service_role" in text for text in warnings), warnings
    assert all(anon not in text for text in caplog.messages)


def test_a_service_role_key_starts_quietly(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(
        _env_file=None,
        supabase_url="https://example.supabase.co",
        supabase_key=_supabase_key("service_role"),
    )
    with caplog.at_level(logging.WARNING, logger="backend.app"):
        create_app(settings)
    assert [r for r in caplog.records if r.name == "backend.app"] == []
