"""Configuration from the environment (BILLFOLD_*), with defaults that need no setup."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    previous_secret_keys: list[str] = Field(
        default=[],
        description="Keys being rotated out: still read, never written (JSON list).",
    )
    test_clock: bool = Field(default=False, description="Lets an admin move time (tests only).")
    log_level: str = "INFO"
    log_json: bool = True
    hold_ttl_s: int = Field(default=900, ge=1, le=30 * 86400)
    hold_max_ttl_s: int = Field(
        default=86_400, ge=1, le=30 * 86400, description="The longest a hold may live."
    )
    hold_sweep_interval_s: float = Field(default=5.0, gt=0)
    idempotency_ttl_s: int = Field(default=86_400, ge=86_400)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_event_body_bytes: int = Field(default=32 * 1_048_576, ge=1024)
    pool_size: int = Field(default=20, ge=1, le=200)
    # Invoicing and dunning.
    tax_rate: str = Field(default="0", description="The platform's tax rate on invoice lines.")
    invoice_prefix: str = Field(default="BF", pattern=r"^[A-Z]{1,8}$")
    invoice_issuer: str = Field(
        default="billfold platform", description="Who issues invoices, as printed on them."
    )
    invoice_due_days: int = Field(default=14, ge=0, le=365)
    # The seller on invoices: the platform's legal details. Multi-line values separate
    # their lines with "\n" (a newline, or the two characters backslash and n).
    invoice_seller_address: str = Field(default="", max_length=500)
    invoice_seller_tax_number: str = Field(default="", max_length=64)
    invoice_seller_contact: str = Field(default="", max_length=200)
    invoice_seller_logo: Path | None = Field(
        default=None, description="A PNG, JPEG or SVG file of at most 256 KB, on invoices."
    )
    invoice_reminder_days: list[int] = Field(
        default=[-3, 1, 7],
        description="When open invoices are mailed again: days before (negative) or after "
        "their due date.",
    )
    invoice_bank_details: str = Field(
        default="", max_length=500, description="Where to pay by bank transfer."
    )
    dunning_retry_hours: list[int] = Field(
        default=[24, 72, 120], description="When a failed renewal is retried, after it failed."
    )
    dunning_grace_days: int = Field(default=7, ge=0, le=365)
    bill_run_interval_s: float = Field(default=30.0, gt=0)
    rate_limit: str = Field(
        default="1000/second",
        description="Requests each API key (or client address) may make, e.g. 1000/second.",
    )
    redis_url: str | None = Field(
        default=None, description="Redis for rate-limit counts shared by every process."
    )
    nats_url: str | None = Field(
        default=None,
        description="NATS with JetStream: POST /v1/events publishes to its stream and "
        "`billfold worker` charges from it (PostgreSQL only).",
    )
    stream_name: str = Field(
        default="BILLFOLD_EVENTS", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The stream."
    )
    stream_subjects: str = Field(
        default="billfold.events",
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="The subjects' prefix: one subject per shard, <prefix>.<shard>.",
    )
    stream_shards: int = Field(
        default=16, ge=1, le=1024, description="Shards of users: one worker applies each."
    )
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="JetStream replicas of the stream (3 in a cluster)."
    )
    stream_max_age_s: int = Field(
        default=7 * 86400, ge=3600, description="How long the stream keeps applied events."
    )
    cors_origins: list[str] = Field(
        default=[], description="Origins browsers may call the API from (none by default)."
    )
    # Webhooks.
    webhook_allow_private: bool = Field(
        default=False,
        description="Lets webhooks go to http and to loopback or private addresses (local "
        "development and tests only).",
    )
    metrics_token: str | None = Field(
        default=None,
        min_length=32,
        description="A bearer token that may read /metrics (Prometheus' scrape); "
        "without it, only an operator's key may.",
    )
    auth_cache_s: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="How long a process trusts an API key or session it looked up (0: never).",
    )
    session_ttl_s: int = Field(
        default=7 * 86400, ge=60, le=90 * 86400, description="How long a console login lasts."
    )
    login_throttle: str = Field(
        default="5/minute",
        description="Failed logins allowed per account, and five times as many per address.",
    )
    password_hash_profile: Literal["rfc_9106_low_memory", "cheapest"] = Field(
        default="rfc_9106_low_memory",
        description="Argon2 parameters for new password hashes; cheapest is for tests only.",
    )
    smtp_url: str | None = Field(
        default=None,
        description="smtp://[user:password@]host[:port] for mail; without one, mail is "
        "written as .eml files under home/mail.",
    )
    mail_from: str = Field(default="billfold <billing@localhost>")
    default_commission_rate: str = Field(
        default="0.20", description="The commission a provider who signs up starts with."
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where people reach the console; links in mails start with it.",
    )
    # Graded arrears of prepaid debt (a plan's "arrears" overrides them for its service).
    arrears_grace_hours: int = Field(
        default=0, ge=0, le=2160, description="Usage goes on this long after a debt arises."
    )
    arrears_terminate_days: int = Field(
        default=15, ge=1, le=365, description="Days from suspension to termination."
    )
    # Payment gateways: each is on when its keys are set.
    stripe_api_key: str | None = Field(default=None, description="sk_... of the platform.")
    stripe_webhook_secret: str | None = Field(
        default=None, description="whsec_...: the signing secret of the webhook endpoint."
    )
    stripe_api_base: str | None = Field(
        default=None, description="Another API base (localstripe in tests)."
    )
    alipay_app_id: str | None = None
    alipay_private_key: str | None = Field(
        default=None, description="The application's RSA private key (PEM, or base64 of it)."
    )
    alipay_public_key: str | None = Field(
        default=None, description="Alipay's RSA public key (PEM, or base64 of it)."
    )
    alipay_gateway_url: str = "https://openapi.alipay.com/gateway.do"
    auto_recharge_daily_cap: str = Field(
        default="1000", description="The most auto-recharge may charge a user in a day."
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)
    webhook_concurrency: int = Field(default=8, ge=1, le=64)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+pysqlite:///{(self.home / 'billfold.db').resolve()}"
