"""Configuration from the environment (BILLFOLD_*), with defaults that need no setup."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BILLFOLD_", extra="ignore")

    home: Path = Field(default=Path(".billfold"), description="Where local state lives.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default an SQLite file under home."
    )
    secret_key: str | None = Field(
        default=None,
        description="Base64 key for personal data; default home/secret.key, made on first run.",
    )
    test_clock: bool = Field(default=False, description="Lets an admin move time (tests only).")
    log_level: str = "INFO"
    log_json: bool = True
    hold_ttl_s: int = Field(default=900, ge=1, le=30 * 86400)
    hold_sweep_interval_s: float = Field(default=5.0, gt=0)
    idempotency_ttl_s: int = Field(default=86_400, ge=86_400)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_event_body_bytes: int = Field(default=32 * 1_048_576, ge=1024)
    pool_size: int = Field(default=20, ge=1, le=200)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+pysqlite:///{(self.home / 'billfold.db').resolve()}"
