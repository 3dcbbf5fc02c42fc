"""The schema, as SQLAlchemy Core tables. Alembic migrations create and upgrade it.

Money columns are BigInteger ledger units (see `billfold.domain.money`); decimal
parameters that are not money (rates) are stored as exact decimal text.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from billfold.store.types import UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = 40  # Length of public ids: a prefix of up to 13 characters, "_", 26 characters.
TRANSFER_ID = 255  # Transfer ids may be client-chosen, so they get room.

# --- parties --------------------------------------------------------------------------

providers = Table(
    "providers",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name_enc", Text, nullable=False),
    Column("email_enc", Text, nullable=False),
    Column("email_index", String(64), nullable=False, unique=True),
    Column("commission_rate", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The seller on invoices of its services when the provider is the merchant of record
    # (legal name, address, tax number, contact), as JSON encrypted like the name.
    Column("seller_details_enc", Text, nullable=True),
    Column("merchant_of_record", Integer, nullable=False, server_default="0"),
)

users = Table(
    "users",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name_enc", Text, nullable=False),
    Column("email_enc", Text, nullable=False),
    Column("email_index", String(64), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("billing_mode", String(16), nullable=False),
    Column("credit_limit", BigInteger, nullable=False),
    Column("external_id", String(255), nullable=True, unique=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The user's own tax rate on invoices (NULL: the platform's rate).
    Column("tax_rate", String(40), nullable=True),
    # The buyer on the user's invoices (billing name, company, address, tax number, the
    # 发票抬头 and 税号 of a fapiao request), as JSON encrypted like the name and email.
    Column("billing_profile_enc", Text, nullable=True),
    # Whether money arriving in a postpaid user's wallet pays open invoices at once.
    Column("autopay_invoices", Integer, nullable=False, server_default="0"),
    CheckConstraint("credit_limit >= 0", name="credit_limit_not_negative"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("hint", String(16), nullable=False),
    Column("role", String(16), nullable=False),
    Column("provider_id", String(ID), ForeignKey("providers.id"), nullable=True),
    Column("user_id", String(ID), ForeignKey("users.id"), nullable=True),
    Column("name", String(200), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    # Comma-separated; null means the key may do all its role may.
    Column("scopes", String(200), nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("rotated_from", String(ID), nullable=True),
)

# --- API plumbing ---------------------------------------------------------------------

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("principal", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("method", String(8), nullable=False),
    Column("path", String(500), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("response_status", Integer, nullable=True),
    Column("response_body", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime, nullable=False),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(ID), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("object_type", String(32), nullable=False),
    Column("object_id", String(TRANSFER_ID), nullable=False),
    Column("details", Text, nullable=True),
    # The provider an entry belongs to (its actor's), for providers reading their trail.
    Column("party", String(ID), nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Index("ix_audit_log_object", "object_type", "object_id"),
    Index("ix_audit_log_party", "party"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("hash", String(64), nullable=False),
)

# --- catalog --------------------------------------------------------------------------

services = Table(
    "services",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("provider_id", String(ID), ForeignKey("providers.id"), nullable=False, index=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("description", String(2000), nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The plan that prices usage of users without a subscription (pay-as-you-go).
    Column("default_plan_id", String(ID), nullable=True),
)

metrics = Table(
    "metrics",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("service_id", String(ID), ForeignKey("services.id"), nullable=False),
    Column("code", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("aggregation", String(16), nullable=False),
    Column("field", String(100), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("service_id", "code"),
)

plans = Table(
    "plans",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("service_id", String(ID), ForeignKey("services.id"), nullable=False, index=True),
    Column("provider_id", String(ID), ForeignKey("providers.id"), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime, nullable=True),
)

# A plan's prices never change in place: a change is a new version, in force from its
# effective_from on, so usage and periods before it keep the prices they had.
plan_versions = Table(
    "plan_versions",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("plan_id", String(ID), ForeignKey("plans.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("effective_from", UTCDateTime, nullable=False),
    Column("definition", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("plan_id", "version"),
    Index("ix_plan_versions_plan_id_effective_from", "plan_id", "effective_from"),
)

# --- prepaid products -----------------------------------------------------------------

# A resource package (资源包) a provider sells: prepaid quantities of its service's
# metrics (by metric id, exact decimal text), valid `validity_days` from its purchase,
# refilled each day or month from then when `reset` says so.
packages = Table(
    "packages",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("provider_id", String(ID), ForeignKey("providers.id"), nullable=False),
    Column("service_id", String(ID), ForeignKey("services.id"), nullable=False, index=True),
    Column("code", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("quantities", Text, nullable=False),
    Column("validity_days", Integer, nullable=False),
    Column("reset", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("provider_id", "code"),
)

# A package a user bought: what it holds (copied from the package at the sale), from
# when to when, and the sale's transfer.
package_holdings = Table(
    "package_holdings",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id"), nullable=False),
    Column("package_id", String(ID), ForeignKey("packages.id"), nullable=False),
    Column("provider_id", String(ID), nullable=False, index=True),
    Column("service_id", String(ID), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("quantities", Text, nullable=False),
    Column("reset", String(8), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("transfer_id", String(TRANSFER_ID), nullable=False),
    # active, refunded.
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_package_holdings_user_id_expires_at", "user_id", "expires_at"),
    Index("ix_package_holdings_expires_at", "expires_at"),
)

# How much of a holding's metric one reset cycle has used (the whole validity when it does
# not reset). A new cycle is a new row, so a reset refills without rolling anything over.
package_usage = Table(
    "package_usage",
    metadata,
    Column("holding_id", String(ID), ForeignKey("package_holdings.id"), primary_key=True),
    Column("metric_id", String(ID), primary_key=True),
    Column("cycle_start", UTCDateTime, primary_key=True),
    Column("used", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# A voucher (代金券, kind "amount") or a discount coupon (折扣券, kind "percent"). An
# admin's (provider_id NULL) is funded by the platform; a provider's by its earnings and
# only for its own services. `services` is a JSON list of service codes, or NULL for all.
coupons = Table(
    "coupons",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("provider_id", String(ID), ForeignKey("providers.id"), nullable=True, index=True),
    Column("kind", String(8), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=True),
    Column("percent", String(16), nullable=True),
    Column("max_discount", BigInteger, nullable=True),
    Column("min_spend", BigInteger, nullable=True),
    Column("services", Text, nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("max_redemptions", Integer, nullable=True),
    Column("redeemed", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# What a user holds of promotions: promotional credit (赠送金), a redeemed voucher (each
# with its own ledger account, owned by the grant), or a redeemed discount coupon waiting
# for the purchase or invoice it takes its percentage off. One redemption per coupon and
# user, by the unique key.
grants = Table(
    "grants",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id"), nullable=False),
    # credit, voucher, discount.
    Column("kind", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("account_id", BigInteger, nullable=True),
    Column("coupon_id", String(ID), ForeignKey("coupons.id"), nullable=True),
    # Who pays for it: "platform", or the provider's id.
    Column("funder", String(ID), nullable=False),
    Column("services", Text, nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    # active, used, expired.
    Column("status", String(16), nullable=False),
    Column("reason", String(500), nullable=True),
    Column("used_transfer_id", String(TRANSFER_ID), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
    UniqueConstraint("coupon_id", "user_id"),
    Index("ix_grants_user_id_status", "user_id", "status"),
    Index("ix_grants_status_expires_at", "status", "expires_at"),
)

# --- payments -------------------------------------------------------------------------

# A payment through a gateway: started here, confirmed by the gateway's signed
# notification. A success credits the wallet once, with a transfer whose id is derived
# from the gateway's payment id; `refunded` is what went back to the card.
payments = Table(
    "payments",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id"), nullable=False),
    Column("gateway", String(16), nullable=False),
    # top_up, invoice, recharge.
    Column("purpose", String(16), nullable=False),
    Column("invoice_id", String(ID), nullable=True),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    # pending, succeeded, failed, canceled.
    Column("status", String(16), nullable=False),
    Column("gateway_ref", String(255), nullable=True),
    Column("gateway_payment_id", String(255), nullable=True),
    Column("transfer_id", String(TRANSFER_ID), nullable=True),
    Column("refunded", BigInteger, nullable=False),
    Column("failure", String(500), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("gateway", "gateway_ref"),
    Index("ix_payments_user_id_created_at", "user_id", "created_at"),
    Index("ix_payments_status_purpose", "status", "purpose"),
)

# A card saved at a gateway for auto-recharge (its references there, never the card).
payment_methods = Table(
    "payment_methods",
    metadata,
    Column("user_id", String(ID), ForeignKey("users.id"), primary_key=True),
    Column("gateway", String(16), primary_key=True),
    Column("customer_ref", String(255), nullable=False),
    Column("method_ref", String(255), nullable=False),
    Column("label", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Auto-recharge: below `threshold` available, one payment of `amount` on the saved card.
recharge_settings = Table(
    "recharge_settings",
    metadata,
    Column("user_id", String(ID), ForeignKey("users.id"), primary_key=True),
    Column("threshold", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("daily_cap", BigInteger, nullable=False),
    Column("enabled", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# A prepaid user's debt and its stage (grace, suspended, terminated): since when it is
# owed, and which steps were announced. Access is judged from the debt itself, so paying
# it restores access at once; the row is how each step is announced once.
arrears = Table(
    "arrears",
    metadata,
    Column("user_id", String(ID), ForeignKey("users.id"), primary_key=True),
    Column("since", UTCDateTime, nullable=False),
    Column("stage", String(16), nullable=False),
    Column("stage_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# --- metering -------------------------------------------------------------------------

# Every accepted usage event, once: the unique index on (provider_id, event_id) is what
# makes a resent event change nothing, with no time limit.
usage_events = Table(
    "usage_events",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("provider_id", String(ID), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("service_id", String(ID), nullable=False),
    Column("metric_id", String(ID), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("value", String(64), nullable=False),
    Column("properties", Text, nullable=True),
    Column("period_start", UTCDateTime, nullable=False),
    Column("ingested_at", UTCDateTime, nullable=False),
    UniqueConstraint("provider_id", "event_id"),
    Index("ix_usage_events_user_id_metric_id_occurred_at", "user_id", "metric_id", "occurred_at"),
)

# Events a provider sent that were refused, each with its reason, for a week: what the
# provider's event debugger shows. Accepted events are in usage_events.
event_rejections = Table(
    "event_rejections",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("provider_id", String(ID), nullable=True),
    Column("key_id", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("position", Integer, nullable=False),
    Column("event_id", String(255), nullable=True),
    Column("code", String(64), nullable=False),
    Column("message", String(500), nullable=False),
    Column("param", String(200), nullable=True),
    Index("ix_event_rejections_provider_id_at", "provider_id", "at"),
    Index("ix_event_rejections_at", "at"),
)

# One metric's usage by one user in one period: the aggregated quantity, the rating state
# of the plan's charges, the exact amount so far and the ledger units charged for it.
usage_periods = Table(
    "usage_periods",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("user_id", String(ID), nullable=False),
    Column("metric_id", String(ID), nullable=False),
    Column("period_start", UTCDateTime, nullable=False),
    Column("period_end", UTCDateTime, nullable=False),
    Column("plan_id", String(ID), nullable=False),
    Column("plan_version", Integer, nullable=False),
    Column("quantity", String(64), nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("latest_at", UTCDateTime, nullable=True),
    Column("state", Text, nullable=False),
    Column("amount", String(80), nullable=False),
    Column("charged_units", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # What resource packages covered of this period's usage (not in `quantity`, which
    # is what the plan priced).
    Column("covered", String(64), nullable=False, server_default="0"),
    UniqueConstraint("user_id", "metric_id", "period_start"),
)

usage_uniques = Table(
    "usage_uniques",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    Column("metric_id", String(ID), primary_key=True),
    Column("period_start", UTCDateTime, primary_key=True),
    Column("value", String(255), primary_key=True),
)

# --- subscriptions and invoices -------------------------------------------------------

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("user_id", String(ID), ForeignKey("users.id"), nullable=False, index=True),
    Column("provider_id", String(ID), nullable=False, index=True),
    Column("service_id", String(ID), nullable=False),
    Column("plan_id", String(ID), nullable=False),
    # trialing, active, past_due, suspended, canceled.
    Column("status", String(16), nullable=False),
    Column("interval", String(16), nullable=False),
    Column("interval_count", Integer, nullable=False),
    Column("billing_anchor", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("trial_end", UTCDateTime, nullable=True),
    # When billing (after the trial) started: the origin of the anchor's grid.
    Column("billing_origin", UTCDateTime, nullable=False),
    Column("current_period_start", UTCDateTime, nullable=False),
    Column("current_period_end", UTCDateTime, nullable=False),
    Column("pending_plan_id", String(ID), nullable=True),
    Column("cancel_at_period_end", Integer, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("past_due_since", UTCDateTime, nullable=True),
    Column("next_retry_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_subscriptions_status_current_period_end", "status", "current_period_end"),
    Index("ix_subscriptions_user_id_service_id", "user_id", "service_id"),
)

# Which plan a subscription was on, when: usage is rated by the phase it falls in.
subscription_phases = Table(
    "subscription_phases",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("subscription_id", String(ID), ForeignKey("subscriptions.id"), nullable=False),
    Column("plan_id", String(ID), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=True),
    Index("ix_subscription_phases_subscription_id_starts_at", "subscription_id", "starts_at"),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", String(ID), primary_key=True),
    # The natural key of a bill run: one invoice per subscription and period, ever.
    Column("billing_key", String(120), nullable=False, unique=True),
    Column("number", String(32), nullable=True, unique=True),
    Column("user_id", String(ID), ForeignKey("users.id"), nullable=False),
    Column("subscription_id", String(ID), nullable=True, index=True),
    Column("provider_id", String(ID), nullable=True),
    Column("currency", String(3), nullable=False),
    Column("billing_mode", String(16), nullable=False),
    Column("period_start", UTCDateTime, nullable=False),
    Column("period_end", UTCDateTime, nullable=False),
    # draft, open (finalized, money still due), paid, void.
    Column("status", String(16), nullable=False),
    Column("subtotal", BigInteger, nullable=False),
    Column("tax", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("amount_paid", BigInteger, nullable=False),
    Column("amount_credited", BigInteger, nullable=False),
    Column("tax_rate", String(40), nullable=False),
    Column("commission_rate", String(40), nullable=False),
    Column("due_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finalized_at", UTCDateTime, nullable=True),
    Column("paid_at", UTCDateTime, nullable=True),
    Column("voided_at", UTCDateTime, nullable=True),
    Index("ix_invoices_user_id_created_at", "user_id", "created_at"),
    Index("ix_invoices_status_due_at", "status", "due_at"),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("invoice_id", String(ID), ForeignKey("invoices.id"), nullable=False, index=True),
    # fixed_fee, usage, proration, minimum, credit.
    Column("kind", String(16), nullable=False),
    Column("description", String(500), nullable=False),
    Column("metric", String(64), nullable=True),
    Column("quantity", String(64), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("tax", BigInteger, nullable=False),
    Column("provider_id", String(ID), nullable=True),
    Column("period_start", UTCDateTime, nullable=True),
    Column("period_end", UTCDateTime, nullable=True),
    # Ledger units of a usage line already charged as the usage happened.
    Column("prepaid", BigInteger, nullable=False),
    # Whether the line's money has moved (to the payer's account), and by which transfer.
    Column("settled", Integer, nullable=False),
    Column("transfer_id", String(TRANSFER_ID), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# Gap-free invoice numbers: one counter per platform and year, taken under a row lock in
# the transaction that finalizes the invoice, so a rolled-back finalization uses none.
invoice_counters = Table(
    "invoice_counters",
    metadata,
    Column("year", Integer, primary_key=True, autoincrement=False),
    Column("last_number", BigInteger, nullable=False),
)

# Money received for an invoice outside a gateway and recorded by an operator (a bank
# transfer, a cheque): each is one ledger transfer from external cash to the receivable.
invoice_payments = Table(
    "invoice_payments",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("invoice_id", String(ID), ForeignKey("invoices.id"), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    # bank_transfer, cheque, other; gateway and wallet payments are in the ledger.
    Column("method", String(16), nullable=False),
    Column("reference", String(200), nullable=False),
    Column("transfer_id", String(TRANSFER_ID), nullable=False),
    Column("recorded_by", String(ID), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("invoice_id", String(ID), ForeignKey("invoices.id"), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("reason", String(500), nullable=False),
    Column("lines", Text, nullable=True),
    Column("transfer_id", String(TRANSFER_ID), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# Usage already put on an invoice, per usage period row: what was charged since goes on
# the next invoice (late events), so no usage is ever invoiced twice or never.
usage_invoiced = Table(
    "usage_invoiced",
    metadata,
    Column("usage_period_id", BigInteger, primary_key=True, autoincrement=False),
    Column("invoiced_units", BigInteger, nullable=False),
    Column("quantity", String(64), nullable=False),
)

# --- analytics ------------------------------------------------------------------------

# Usage as metering charges it, one row per (user, metric, quarter-hour) touched by an
# ingest transaction, appended in that transaction: no row is shared between concurrent
# batches, so the journal adds no contention. The folder moves it into the rollups.
usage_deltas = Table(
    "usage_deltas",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("bucket", UTCDateTime, nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("provider_id", String(ID), nullable=False),
    Column("service_id", String(ID), nullable=False),
    Column("metric_id", String(ID), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("quantity", String(64), nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
)

# Usage per quarter-hour (every UTC offset in use is a multiple of 15 minutes, so days and
# hours in any time zone are whole buckets): per provider, service and metric ...
usage_rollup = Table(
    "usage_rollup",
    metadata,
    Column("provider_id", String(ID), primary_key=True),
    Column("bucket", UTCDateTime, primary_key=True),
    Column("service_id", String(ID), primary_key=True),
    Column("metric_id", String(ID), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("quantity", String(64), nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Index("ix_usage_rollup_bucket", "bucket"),
)

# ... and per user, for a user's own series and for series grouped by user.
usage_rollup_users = Table(
    "usage_rollup_users",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    Column("bucket", UTCDateTime, primary_key=True),
    Column("metric_id", String(ID), primary_key=True),
    Column("provider_id", String(ID), nullable=False),
    Column("service_id", String(ID), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("quantity", String(64), nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Index("ix_usage_rollup_users_provider_id_bucket", "provider_id", "bucket"),
)

# Revenue per quarter-hour, provider, service and currency, folded from the ledger in
# transfer order (`analytics_state.revenue_seq` is how far). Units are ledger units:
# gross is what charges moved to the provider and the platform, refunds what reversals
# and credit notes took back, commission the platform's net share; net = gross -
# refunds - commission is exactly what the provider's earnings account gained.
revenue_rollup = Table(
    "revenue_rollup",
    metadata,
    Column("provider_id", String(ID), primary_key=True),
    Column("bucket", UTCDateTime, primary_key=True),
    Column("service", String(100), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("gross", BigInteger, nullable=False),
    Column("refunds", BigInteger, nullable=False),
    Column("commission", BigInteger, nullable=False),
    Column("transfers", BigInteger, nullable=False),
    Index("ix_revenue_rollup_bucket", "bucket"),
)

analytics_state = Table(
    "analytics_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# --- alerts and webhooks --------------------------------------------------------------

alert_settings = Table(
    "alert_settings",
    metadata,
    Column("user_id", String(ID), ForeignKey("users.id"), primary_key=True),
    Column("monthly_budget", BigInteger, nullable=True),
    Column("budget_thresholds", String(200), nullable=False),
    Column("low_balance", BigInteger, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Each alert once: `key` says what it is about (a user, a month, a threshold), so
# evaluating the same facts again finds it there.
alerts = Table(
    "alerts",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("key", String(255), nullable=False, unique=True),
    Column("type", String(40), nullable=False),
    Column("user_id", String(ID), nullable=True, index=True),
    Column("provider_id", String(ID), nullable=True, index=True),
    Column("data", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("owner_type", String(16), nullable=False),
    Column("owner_id", String(ID), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("secret_enc", Text, nullable=False),
    Column("event_types", String(500), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_webhook_endpoints_owner", "owner_type", "owner_id"),
)

# The durable outbox: a message is written in the transaction that raised its alert and
# is delivered (at least once, always with the same id) by the housekeeping worker.
webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("endpoint_id", String(ID), ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("event_type", String(60), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Index("ix_webhook_messages_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_webhook_messages_endpoint_id_created_at", "endpoint_id", "created_at"),
)

# People: a login (email and password) names one principal, as an API key does.
logins = Table(
    "logins",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("email_enc", Text, nullable=False),
    Column("email_index", String(64), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("user_id", String(ID), nullable=True, index=True),
    Column("provider_id", String(ID), nullable=True, index=True),
    Column("status", String(16), nullable=False),
    Column("locale", String(8), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("verified_at", UTCDateTime, nullable=True),
    Column("password_changed_at", UTCDateTime, nullable=True),
    # A TOTP second factor (encrypted): the confirmed secret, one being set up, and the
    # last time step used, so that a code works once.
    Column("totp_secret_enc", Text, nullable=True),
    Column("totp_pending_enc", Text, nullable=True),
    Column("totp_last_step", BigInteger, nullable=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("csrf_hash", String(64), nullable=False),
    Column("login_id", String(ID), ForeignKey("logins.id"), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("address", String(64), nullable=True),
)

# One-time tokens mailed to a login: email verification and password reset.
login_tokens = Table(
    "login_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("login_id", String(ID), ForeignKey("logins.id"), nullable=False, index=True),
    Column("purpose", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    # What the token carries besides its login (an email change's new address), encrypted.
    Column("payload_enc", Text, nullable=True),
)

# Mail about invoices, written in the transaction that makes it due and sent afterwards
# (an outbox): the invoice when it is issued, reminders before and after its due date.
# A notice is marked sent after the SMTP server took it; one that failed is retried.
invoice_notices = Table(
    "invoice_notices",
    metadata,
    Column("invoice_id", String(ID), ForeignKey("invoices.id"), primary_key=True),
    # issued, due_in_<n>d, overdue_<n>d.
    Column("kind", String(24), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("last_error", String(500), nullable=True),
    # A process sending it holds it until then; past it, another may send it.
    Column("claimed_until", UTCDateTime, nullable=True),
    Index("ix_invoice_notices_sent_at", "sent_at"),
)
