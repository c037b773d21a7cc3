"""Node settings, read from the environment and `.env`.

Nothing is read at import: `backend.main` (what uvicorn loads) builds the one
instance a node runs with; tests and the command-line tools make their own.
"""

import base64
import binascii
import json
import os
import socket
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    # Errors name the setting and the problem, never its value: URLs and keys are secrets.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    node_id: str = Field(default_factory=_default_node_id, min_length=1, max_length=64)
    log_level: str = "INFO"

    database_url: SecretStr | None = None
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    db_statement_cache_size: int | None = Field(
        default=None, ge=0, description="None: 0 behind a transaction pooler (port 6543), else 100"
    )
    db_command_timeout: float = Field(default=10.0, gt=0)

    # With both set, SUPABASE_URL wins: nodes use the API and ignore DATABASE_URL
    # (which may still serve, say, to apply the migrations directly).
    supabase_url: str | None = None
    # SUPABASE_KEY is the name seed-style .env files give the same server key.
    supabase_service_role_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("supabase_service_role_key", "supabase_key"),
    )
    supabase_timeout: float = Field(default=10.0, gt=0)

    # Who may call: Supabase Auth JWTs (the legacy HS256 secret and/or the
    # project's JWKS, by default <SUPABASE_URL>/auth/v1/.well-known/jwks.json)
    # and API keys; anonymous callers may read the catalog unless PUBLIC_CATALOG=false.
    supabase_jwt_secret: SecretStr | None = None
    # The project's public anon key: the dashboard signs in with it against Supabase Auth.
    supabase_anon_key: str | None = None
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    public_catalog: bool = True
    metrics_token: SecretStr | None = None
    allowed_origins: str = Field(default="", description="comma-separated browser origins")
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    rate_limit_writes_per_minute: int = Field(default=600, ge=0, description="0: no limit")
    ws_max_per_address: int = Field(default=200, ge=1)
    ws_max_follows: int = Field(default=100, ge=1)

    redis_url: str | None = None
    # The key every node seals its bus messages with and checks others' against.
    bus_key: SecretStr | None = None
    channel_prefix: str = Field(default="", max_length=64)

    hold_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    fee_rate: float = Field(default=0.20, ge=0, le=1)
    max_order_lines: int = Field(default=100, ge=1, le=1000)
    # Group commit: the orders that arrive while a call is in flight are placed
    # together, at most this many per call, with at most this many calls at once.
    order_batch_max: int = Field(default=50, ge=1, le=500)
    order_batch_calls: int = Field(default=2, ge=1, le=64)
    sweep_interval_seconds: float = Field(default=2.0, gt=0)

    # The order lifecycle: payment, receipts, webhooks, on a Redis Stream.
    payment_provider: Literal["manual", "simulated", "webhook"] = "manual"
    payment_delay_seconds: float = Field(default=0.5, ge=0, le=60)
    payment_webhook_secret: SecretStr | None = None
    payment_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    smtp_url: str | None = Field(default=None, description="smtp://host:port; None: no mail")
    mail_from: str = "OrderFlow <orders@localhost>"
    receipts_dir: str = ".data/receipts"
    receipts_bucket: str = Field(default="receipts", min_length=3, max_length=63)
    stream_maxlen: int = Field(default=100_000, ge=100)
    relay_interval_seconds: float = Field(default=0.2, gt=0)
    relay_batch: int = Field(default=200, ge=1, le=1000)
    workers: str = Field(
        default="payments,notifications,webhooks",
        description="comma-separated consumers this node runs; empty: none",
    )
    worker_max_attempts: int = Field(default=5, ge=1, le=100)
    worker_retry_base_seconds: float = Field(default=0.5, gt=0)
    worker_claim_idle_seconds: float = Field(default=10.0, gt=0)
    webhook_allow_http: bool = Field(
        default=False, description="accept http:// webhook endpoints (development only)"
    )
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    sweep_batch: int = Field(default=100, ge=1, le=10_000)
    catchup_interval_seconds: float = Field(default=0.5, gt=0)
    bus_outbox_size: int = Field(default=10_000, ge=1)
    ws_heartbeat_seconds: float = Field(default=15.0, gt=0)
    ws_max_lifetime_seconds: float = Field(default=3600.0, gt=0)
    ws_max_pending: int = Field(default=10_000, ge=1)
    # On SIGTERM: how long /ready fails before WebSocket clients are sent away
    # (for a load balancer to notice), and how long they get to close.
    shutdown_delay_seconds: float = Field(default=0.0, ge=0, le=300)
    shutdown_timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _check_modes(self) -> "Settings":
        if self.supabase_url and not self.supabase_service_role_key and not self.database_url:
            # With DATABASE_URL, SUPABASE_URL alone names the project to sign in against.
            raise ValueError(
                "SUPABASE_URL is set but SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_KEY) is not"
            )
        if self.supabase_service_role_key and not self.supabase_url:
            raise ValueError(
                "SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_KEY) is set but SUPABASE_URL is not"
            )
        if self.supabase_url and urlsplit(self.supabase_url).scheme not in ("http", "https"):
            raise ValueError(
                "SUPABASE_URL must be the project's API URL (https://<ref>.supabase.co);"
                " a Postgres connection string goes in DATABASE_URL"
            )
        for name in ("bus_key", "supabase_jwt_secret", "metrics_token", "payment_webhook_secret"):
            value = getattr(self, name)
            if value is not None and value.get_secret_value().startswith(("change-me", "your-")):
                raise ValueError(f"{name.upper()} is still the placeholder from .env.example")
        secret = self.supabase_jwt_secret
        if secret is not None and len(secret.get_secret_value().encode()) < 32:
            raise ValueError("SUPABASE_JWT_SECRET must be at least 32 bytes")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("DB_POOL_MIN must not exceed DB_POOL_MAX")
        return self

    def node_problem(self) -> str | None:
        """What stops these settings from running a node (tools that only reach the
        database, like the launcher or the keys CLI, need less)."""
        if self.redis_url and self.bus_key is None:
            return (
                "REDIS_URL is set but BUS_KEY is not: every node needs the same secret key"
                " to seal its bus messages (make one with: python3 -c"
                " 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if self.payment_provider == "webhook" and self.payment_webhook_secret is None:
            return "PAYMENT_PROVIDER=webhook needs PAYMENT_WEBHOOK_SECRET to check the calls"
        return None

    @property
    def supabase_key_role(self) -> str | None:
        """The role the server key claims (`service_role`, `anon`...), read from its JWT
        payload without checking the signature: only to warn about a wrong key."""
        if self.supabase_service_role_key is None:
            return None
        return key_role(self.supabase_service_role_key.get_secret_value())

    @property
    def worker_names(self) -> list[str]:
        return [name.strip() for name in self.workers.split(",") if name.strip()]

    @property
    def jwks_url(self) -> str | None:
        if self.auth_jwks_url:
            return self.auth_jwks_url
        if self.supabase_url:
            return f"{self.supabase_url.rstrip('/')}/auth/v1/.well-known/jwks.json"
        return None

    @property
    def jwt_issuer(self) -> str | None:
        if self.auth_issuer:
            return self.auth_issuer
        if self.supabase_url:
            return f"{self.supabase_url.rstrip('/')}/auth/v1"
        return None

    @property
    def origins(self) -> list[str]:
        return [origin.strip() for origin in self.allowed_origins.split(",") if origin.strip()]

    @property
    def fee_bps(self) -> int:
        """The fee in basis points, so SQL does integer arithmetic on money."""
        return round(self.fee_rate * 10_000)

    @property
    def statement_cache_size(self) -> int:
        if self.db_statement_cache_size is not None:
            return self.db_statement_cache_size
        url = self.database_url.get_secret_value() if self.database_url else ""
        return 0 if urlsplit(url).port == 6543 else 100


def key_role(key: str) -> str | None:
    """The `role` claim of a Supabase API key: a JWT (legacy keys) or an `sb_` key."""
    if key.startswith("sb_publishable_"):
        return "anon"
    if key.startswith("sb_secret_"):
        return "service_role"
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    role = payload.get("role") if isinstance(payload, dict) else None
    return role if isinstance(role, str) else None
