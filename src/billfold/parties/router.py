"""Providers, users and their money: /v1/providers, /v1/users, /v1/charges."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Response

from billfold import parties
from billfold.core.access import Principal
from billfold.core.context import Context, Work
from billfold.core.http import (
    AnsweredTogether,
    Limit,
    Read,
    SegmentRouter,
    StartingAfter,
    UnitOfWorkRoute,
    Write,
    get_context,
    get_principal,
    grouped,
    grouped_together,
    json_answer,
    maybe_aware,
    transfer_id_for,
)
from billfold.core.schemas import Moment
from billfold.domain.errors import BillfoldError
from billfold.parties import profile
from billfold.parties.schemas import (
    BalanceOut,
    BillingProfileOut,
    BillingProfileUpdate,
    ChargeCreate,
    CreditLimitUpdate,
    ProviderCreate,
    ProviderList,
    ProviderOut,
    ProviderUpdate,
    RefundCreate,
    SellerDetailsOut,
    SellerDetailsUpdate,
    TopUpCreate,
    TransactionList,
    TransactionOut,
    UserCreate,
    UserList,
    UserOut,
)

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["parties and money"])
Ctx = Annotated[Context, Depends(get_context)]
Who = Annotated[Principal, Depends(get_principal)]


@router.post("/providers", status_code=201, response_model=ProviderOut)
def create_provider(body: ProviderCreate, work: Write, who: Who) -> ProviderOut:
    """Onboards a service provider (admin)."""
    return ProviderOut.of(
        parties.create_provider(
            work, who, name=body.name, email=body.email, commission_rate=body.commission_rate
        )
    )


@router.get("/providers", response_model=ProviderList)
def list_providers(
    work: Read, who: Who, limit: Limit = 100, starting_after: StartingAfter = None
) -> ProviderList:
    page = parties.list_providers(work, who, limit=limit, starting_after=starting_after)
    return ProviderList(data=[ProviderOut.of(p) for p in page.data], has_more=page.has_more)


@router.get("/providers/{provider_id}", response_model=ProviderOut)
def get_provider(provider_id: str, work: Read, who: Who) -> ProviderOut:
    return ProviderOut.of(parties.get_provider(work, who, provider_id))


@router.post("/providers/{provider_id}", response_model=ProviderOut)
def update_provider(provider_id: str, body: ProviderUpdate, work: Write, who: Who) -> ProviderOut:
    """Changes the provider's commission rate for charges from now on (admin)."""
    return ProviderOut.of(
        parties.update_provider(work, who, provider_id, commission_rate=body.commission_rate)
    )


@router.post("/users", status_code=201, response_model=UserOut)
def create_user(body: UserCreate, work: Write, who: Who) -> UserOut:
    """Signs up an end user (admin)."""
    return UserOut.of(
        parties.create_user(
            work,
            who,
            name=body.name,
            email=body.email,
            currency_code=body.currency,
            billing_mode=body.billing_mode,
            credit_limit=body.credit_limit,
            external_id=body.external_id,
            tax_rate=body.tax_rate,
        )
    )


@router.get("/users", response_model=UserList)
def list_users(
    work: Read, who: Who, limit: Limit = 100, starting_after: StartingAfter = None
) -> UserList:
    page = parties.list_users(work, who, limit=limit, starting_after=starting_after)
    return UserList(data=[UserOut.of(u) for u in page.data], has_more=page.has_more)


@router.get("/users/{user_id}", response_model=UserOut)
def get_user(user_id: str, work: Read, who: Who) -> UserOut:
    """The user with its balance (admin, that user)."""
    return UserOut.of(parties.get_user(work, who, user_id))


@router.post("/users/{user_id}/credit-limit", response_model=UserOut)
def set_credit_limit(user_id: str, body: CreditLimitUpdate, work: Write, who: Who) -> UserOut:
    return UserOut.of(parties.set_credit_limit(work, who, user_id, body.credit_limit))


@router.get("/providers/{provider_id}/seller-details", response_model=SellerDetailsOut)
def get_seller_details(provider_id: str, work: Read, who: Who) -> SellerDetailsOut:
    """What invoices print of the provider as their seller (admin, that provider)."""
    return SellerDetailsOut.of(profile.get_seller(work, who, provider_id))


@router.post("/providers/{provider_id}/seller-details", response_model=SellerDetailsOut)
def set_seller_details(
    provider_id: str, body: SellerDetailsUpdate, work: Write, who: Who
) -> SellerDetailsOut:
    """Makes the provider the merchant of record of its invoices, with its legal details
    (admin, that provider)."""
    return SellerDetailsOut.of(
        profile.set_seller(work, who, provider_id, body.model_dump(exclude_unset=True))
    )


@router.get("/users/{user_id}/billing-profile", response_model=BillingProfileOut)
def get_billing_profile(user_id: str, work: Read, who: Who) -> BillingProfileOut:
    """The buyer on the user's invoices, and whether cash pays open invoices (admin, that
    user)."""
    return BillingProfileOut.of(profile.get_profile(work, who, user_id))


@router.post("/users/{user_id}/billing-profile", response_model=BillingProfileOut)
def set_billing_profile(
    user_id: str, body: BillingProfileUpdate, work: Write, who: Who
) -> BillingProfileOut:
    """Changes the buyer on the user's invoices (admin, that user)."""
    return BillingProfileOut.of(
        profile.set_profile(work, who, user_id, body.model_dump(exclude_unset=True))
    )


@router.get("/users/{user_id}/balance", response_model=BalanceOut)
def get_balance(
    user_id: str,
    work: Read,
    who: Who,
    as_of: Annotated[Moment | None, Query(description="A past instant, with offset.")] = None,
) -> BalanceOut:
    """posted, held and available (= posted - held + credit_limit), now or as of a past time."""
    as_of = maybe_aware(as_of, "as_of")
    return BalanceOut.of(parties.get_balance(work, who, user_id, as_of=as_of))


@router.post("/users/{user_id}/top-ups", status_code=201, response_model=TransactionOut)
async def top_up(user_id: str, body: TopUpCreate, request: Request, who: Who) -> Response:
    """Credits the user's wallet (admin); idempotent with an Idempotency-Key."""
    transfer_id = transfer_id_for(request, who)

    def run(work: Work) -> Response:
        movement = parties.top_up(
            work,
            who,
            user_id,
            amount=body.amount,
            reference=body.reference,
            transfer_id=transfer_id,
        )
        return json_answer(TransactionOut.of(movement), 201)

    return await grouped(request, run)


@router.get("/users/{user_id}/transactions", response_model=TransactionList)
def list_transactions(
    user_id: str, work: Read, who: Who, limit: Limit = 100, starting_after: StartingAfter = None
) -> TransactionList:
    """Every movement of the user's money, newest first (admin, that user)."""
    page = parties.transactions(work, who, user_id, limit=limit, starting_after=starting_after)
    return TransactionList(data=[TransactionOut.of(m) for m in page.data], has_more=page.has_more)


@router.post("/charges", status_code=201, response_model=TransactionOut)
async def create_charge(body: ChargeCreate, request: Request, who: Who) -> Response:
    """A one-off charge, split between the provider and the platform (provider: own; admin)."""
    asked = parties.ChargeRequest(
        who,
        user_ref=body.user,
        amount=body.amount,
        description=body.description,
        provider_id=body.provider_id,
        service=body.service,
        transfer_id=transfer_id_for(request, who),
    )
    return await grouped_together(request, CHARGES, asked)


def _charge_answers(
    work: Work, asked: list[parties.ChargeRequest]
) -> list[Response | BillfoldError]:
    return [
        answer if isinstance(answer, BillfoldError) else json_answer(TransactionOut.of(answer), 201)
        for answer in parties.charge_many(work, asked)
    ]


CHARGES = AnsweredTogether(_charge_answers)
"""A group's one-off charges, answered at once (billfold.core.group_commit)."""


@router.post("/charges/{charge_id}/refunds", status_code=201, response_model=TransactionOut)
async def refund_charge(charge_id: str, body: RefundCreate, request: Request, who: Who) -> Response:
    """Refunds all or part of a charge (admin; provider: its own charges)."""
    transfer_id = transfer_id_for(request, who)

    def run(work: Work) -> Response:
        movement = parties.refund(
            work, who, charge_id, amount=body.amount, reason=body.reason, transfer_id=transfer_id
        )
        return json_answer(TransactionOut.of(movement), 201)

    return await grouped(request, run)
