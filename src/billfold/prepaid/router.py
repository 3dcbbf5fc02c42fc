"""Prepaid products over HTTP: /v1/packages, /v1/coupons, and a user's packages, coupons
and credits."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from billfold import prepaid
from billfold.core.access import Principal
from billfold.core.http import (
    Limit,
    Read,
    SegmentRouter,
    StartingAfter,
    UnitOfWorkRoute,
    Write,
    get_principal,
    maybe_aware,
    transfer_id_for,
)
from billfold.prepaid.schemas import (
    CouponCreate,
    CouponList,
    CouponOut,
    CreditGrant,
    GrantList,
    GrantOut,
    HoldingList,
    HoldingOut,
    PackageCreate,
    PackageList,
    PackageOut,
    PackagePurchase,
    Redemption,
)

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["prepaid products"])
Who = Annotated[Principal, Depends(get_principal)]
Ended = Annotated[bool, Query(description="Also the expired, used and refunded ones.")]


@router.post("/packages", status_code=201, response_model=PackageOut)
def create_package(body: PackageCreate, work: Write, who: Who) -> PackageOut:
    """A resource package of the provider's own service (provider; admin: any)."""
    return PackageOut.of(
        prepaid.create_package(
            work,
            who,
            code=body.code,
            name=body.name,
            service=body.service,
            currency_code=body.currency,
            price=body.price,
            quantities=body.quantities,
            validity_days=body.validity_days,
            reset=body.reset,
            provider_id=body.provider_id,
        )
    )


@router.get("/packages", response_model=PackageList)
def list_packages(
    work: Read,
    who: Who,
    service: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    starting_after: StartingAfter = None,
) -> PackageList:
    """Packages on sale (a provider: its own)."""
    page = prepaid.list_packages(
        work, who, service=service, limit=limit, starting_after=starting_after
    )
    return PackageList(data=[PackageOut.of(p) for p in page.data], has_more=page.has_more)


@router.get("/packages/{package_id}", response_model=PackageOut)
def get_package(package_id: str, work: Read, who: Who) -> PackageOut:
    """One package (retired ones: its provider and admins only)."""
    return PackageOut.of(prepaid.get_package(work, package_id, who))


@router.post("/users/{user_id}/packages", status_code=201, response_model=HoldingOut)
def buy_package(
    user_id: str, body: PackagePurchase, request: Request, work: Write, who: Who
) -> HoldingOut:
    """Buys a package from the wallet (that user, admin); idempotent with an Idempotency-Key."""
    return HoldingOut.of(
        prepaid.buy_package(
            work, who, user_id, body.package, transfer_id=transfer_id_for(request, who)
        )
    )


@router.get("/users/{user_id}/packages", response_model=HoldingList)
def list_holdings(user_id: str, work: Read, who: Who, ended: Ended = False) -> HoldingList:
    """The packages the user holds, with what remains (that user, admin; a provider: its
    own packages)."""
    return HoldingList(
        data=[
            HoldingOut.of(h) for h in prepaid.list_holdings(work, who, user_id, include_ended=ended)
        ]
    )


@router.post("/coupons", status_code=201, response_model=CouponOut)
def create_coupon(body: CouponCreate, work: Write, who: Who) -> CouponOut:
    """A voucher or a discount coupon (admin: paid by the platform; provider: its own
    services, paid from its earnings)."""
    return CouponOut.of(
        prepaid.create_coupon(
            work,
            who,
            code=body.code,
            kind=body.kind,
            currency_code=body.currency,
            amount=body.amount,
            percent=body.percent,
            max_discount=body.max_discount,
            min_spend=body.min_spend,
            services=body.services,
            expires_at=maybe_aware(body.expires_at, "expires_at"),
            max_redemptions=body.max_redemptions,
            provider_id=body.provider_id,
        )
    )


@router.get("/coupons", response_model=CouponList)
def list_coupons(
    work: Read, who: Who, limit: Limit = 100, starting_after: StartingAfter = None
) -> CouponList:
    """Coupons and how often each was redeemed (admin: all; provider: its own)."""
    page = prepaid.list_coupons(work, who, limit=limit, starting_after=starting_after)
    return CouponList(data=[CouponOut.of(c) for c in page.data], has_more=page.has_more)


@router.post("/users/{user_id}/coupons", status_code=201, response_model=GrantOut)
def redeem_coupon(user_id: str, body: Redemption, work: Write, who: Who) -> GrantOut:
    """Redeems a code, once per account (that user, admin)."""
    return GrantOut.of(prepaid.redeem(work, who, user_id, body.code))


@router.post("/users/{user_id}/credits", status_code=201, response_model=GrantOut)
def grant_credit(user_id: str, body: CreditGrant, work: Write, who: Who) -> GrantOut:
    """Promotional credit, paid for by the platform (admin)."""
    return GrantOut.of(
        prepaid.grant_credit(
            work,
            who,
            user_id,
            amount=body.amount,
            expires_at=maybe_aware(body.expires_at, "expires_at"),
            reason=body.reason,
        )
    )


@router.get("/users/{user_id}/grants", response_model=GrantList)
def list_grants(user_id: str, work: Read, who: Who, ended: Ended = False) -> GrantList:
    """The user's vouchers, promotional credits and redeemed discount coupons (that user,
    admin)."""
    return GrantList(
        data=[GrantOut.of(g) for g in prepaid.list_grants(work, who, user_id, include_ended=ended)]
    )
