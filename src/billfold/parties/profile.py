"""Who invoices name: a user's billing profile (the buyer, and whether money arriving in a
postpaid wallet pays open invoices at once), and a provider's seller details when it is
the merchant of record of its services. Kept encrypted like names and emails."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import update

from billfold.catalog import hides_personal_data
from billfold.core import audit
from billfold.core.access import Principal, require_provider_access, require_user_access
from billfold.core.context import Work
from billfold.core.directory import (
    PROFILE_FIELDS,
    SELLER_FIELDS,
    BillingProfile,
    SellerDetails,
    billing_profile,
    load_user,
    seller_details,
)
from billfold.core.text import clean_email, clean_text, required_text
from billfold.domain.errors import InvalidRequest, NotFound
from billfold.invoicing import billing
from billfold.store.tables import providers, users

_LIMITS = {
    "name": 200,
    "company": 200,
    "address": 500,
    "tax_number": 64,
    "email": 254,
    "fapiao_title": 200,
    "fapiao_tax_number": 20,
}


def get_profile(work: Work, principal: Principal, user_ref: str) -> BillingProfile:
    """The user's billing profile (admin, that user; a provider never sees it)."""
    user = load_user(work, user_ref)
    if hides_personal_data(principal):
        raise NotFound(f"no user {user_ref}", code="user_not_found", param="user")
    require_user_access(principal, user.id, asked=user_ref)
    return billing_profile(work, user.id)


def set_profile(
    work: Work, principal: Principal, user_ref: str, changes: dict[str, Any]
) -> BillingProfile:
    """Changes the fields given (a field set to "" or null is removed); the rest stay."""
    user = load_user(work, user_ref)
    if hides_personal_data(principal):
        raise NotFound(f"no user {user_ref}", code="user_not_found", param="user")
    require_user_access(principal, user.id, asked=user_ref)
    current = billing_profile(work, user.id)
    details = dict(current.details)
    for name in PROFILE_FIELDS:
        if name not in changes:
            continue
        value = changes[name]
        if value is None or (isinstance(value, str) and not value.strip()):
            details.pop(name, None)
            continue
        details[name] = _clean(name, value)
    autopay = current.autopay_invoices
    if changes.get("autopay_invoices") is not None:
        autopay = bool(changes["autopay_invoices"])
    now = work.clock.now()
    work.conn.execute(
        update(users)
        .where(users.c.id == user.id)
        .values(
            billing_profile_enc=work.cipher.encrypt(
                json.dumps(details, ensure_ascii=False, sort_keys=True), context="users.billing"
            )
            if details
            else None,
            autopay_invoices=1 if autopay else 0,
        )
    )
    audit.record(
        work, principal, "user.billing_profile_changed", "user", user.id, at=now,
        details={"fields": sorted(k for k in changes if k in PROFILE_FIELDS),
                 "autopay_invoices": autopay},
    )  # fmt: skip
    if autopay and not current.autopay_invoices:
        billing.collect_for_user(work, user.id)  # Cash already there pays what is open.
    return billing_profile(work, user.id)


def _address(value: object, limit: int) -> str:
    """Up to 8 lines of printable text, empty lines dropped."""
    if not isinstance(value, str):
        raise InvalidRequest("address must be a text", param="address")
    lines = [
        clean_text(line, param="address", max_length=limit, required=False) or ""
        for line in value.replace("\r\n", "\n").split("\n")
    ]
    joined = "\n".join(line for line in lines if line)
    if len(joined) > limit or len(lines) > 8:
        raise InvalidRequest(
            f"address may have at most {limit} characters on 8 lines", param="address"
        )
    return joined


def _clean(name: str, value: object) -> str:
    limit = _LIMITS[name]
    if name == "email":
        return clean_email(value)
    if name == "address":
        return _address(value, limit)
    text = required_text(value, param=name, max_length=limit)
    if name == "fapiao_tax_number" and not (
        len(text) in (15, 18, 20) and text.isalnum() and text.isascii()
    ):
        raise InvalidRequest(
            "fapiao_tax_number is a taxpayer identification number (统一社会信用代码): "
            "15, 18 or 20 letters and digits",
            param="fapiao_tax_number",
        )
    return text


# --- a provider as the seller -----------------------------------------------------------

_SELLER_LIMITS = {"legal_name": 200, "address": 500, "tax_number": 64, "contact": 200}


def get_seller(work: Work, principal: Principal, provider_id: str) -> SellerDetails:
    """A provider's seller details (admin, that provider)."""
    require_provider_access(principal, provider_id)
    return seller_details(work, provider_id)


def set_seller(
    work: Work, principal: Principal, provider_id: str, changes: dict[str, Any]
) -> SellerDetails:
    """Changes the fields given; `merchant_of_record` makes invoices of the provider's
    services name it as the seller (it needs a legal name and an address)."""
    require_provider_access(principal, provider_id)
    current = seller_details(work, provider_id)
    details = dict(current.details)
    for name in SELLER_FIELDS:
        if name not in changes:
            continue
        value = changes[name]
        if value is None or (isinstance(value, str) and not value.strip()):
            details.pop(name, None)
        elif name == "address":
            details[name] = _address(value, _SELLER_LIMITS[name])
        else:
            details[name] = required_text(value, param=name, max_length=_SELLER_LIMITS[name])
    merchant = current.merchant_of_record
    if changes.get("merchant_of_record") is not None:
        merchant = bool(changes["merchant_of_record"])
    if merchant and not (details.get("legal_name") and details.get("address")):
        raise InvalidRequest(
            "a merchant of record needs its legal_name and address on its invoices",
            param="merchant_of_record",
        )
    now = work.clock.now()
    work.conn.execute(
        update(providers)
        .where(providers.c.id == provider_id)
        .values(
            seller_details_enc=work.cipher.encrypt(
                json.dumps(details, ensure_ascii=False, sort_keys=True), context="providers.seller"
            )
            if details
            else None,
            merchant_of_record=1 if merchant else 0,
        )
    )
    audit.record(
        work, principal, "provider.seller_details_changed", "provider", provider_id, at=now,
        details={"fields": sorted(k for k in changes if k in SELLER_FIELDS),
                 "merchant_of_record": merchant},
    )  # fmt: skip
    return seller_details(work, provider_id)
