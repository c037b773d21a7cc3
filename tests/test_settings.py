"""Every setting is documented in .env.example, and a half-set mode is refused."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from backend.app import create_app
from backend.settings import Settings

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
