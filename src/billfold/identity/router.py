"""Sign-up, email verification, sessions and password resets over HTTP."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from billfold import identity
from billfold.core import sessions
from billfold.core.access import Principal
from billfold.core.http import Read, UnitOfWorkRoute, Write, get_principal
from billfold.core.schemas import ListOf
from billfold.identity.schemas import (
    Accepted,
    ResetCreate,
    ResetRequest,
    SessionCreate,
    SessionItem,
    SessionOut,
    SignupCreate,
    SignupOut,
    VerificationCreate,
    VerificationOut,
)

router = APIRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["identity"])
Who = Annotated[Principal, Depends(get_principal)]
Token = Annotated[str, Path(min_length=1, max_length=200)]


@router.post("/signup", response_model=SignupOut, status_code=201)
def signup(body: SignupCreate, work: Write) -> SignupOut:
    """A user (prepaid) or a provider application; mails a link to confirm the address."""
    done = identity.signup(
        work,
        kind=body.kind,
        name=body.name,
        email=body.email,
        password=body.password,
        currency=body.currency,
        locale=body.locale,
    )
    return SignupOut(id=done.id, kind=done.kind, status=done.status)


@router.post("/email-verifications", response_model=VerificationOut)
def verify_email(body: VerificationCreate, work: Write) -> VerificationOut:
    """Confirms the address from the mailed link's token."""
    return VerificationOut(status=identity.verify_email(work, token=body.token))


@router.post("/sessions", response_model=SessionOut, status_code=201)
def create_session(
    body: SessionCreate, request: Request, response: Response, work: Write
) -> SessionOut:
    """Logs in: sets the HttpOnly session cookie and answers the principal."""
    address = request.client.host if request.client else None
    done = identity.login(work, email=body.email, password=body.password, address=address)
    secure = request.url.scheme == "https"
    response.set_cookie(
        sessions.SECURE_COOKIE if secure else sessions.COOKIE,
        done.session.token,
        max_age=work.settings.session_ttl_s,
        httponly=True,
        secure=secure,
        samesite="lax",
        path="/",
    )
    p = done.principal
    return SessionOut(
        id=done.session.view.id,
        role=str(p.role),
        user_id=p.user_id,
        provider_id=p.provider_id,
        locale=done.locale,
        expires_at=done.session.view.expires_at,
        csrf_token=done.session.csrf_token,
    )


@router.delete("/sessions/current", status_code=204)
def delete_session(request: Request, response: Response, work: Write, who: Who) -> None:
    """Logs out: the session ends on the server and its cookie is cleared."""
    identity.logout(work, who)
    secure = request.url.scheme == "https"
    response.delete_cookie(
        sessions.SECURE_COOKIE if secure else sessions.COOKIE, path="/", secure=secure
    )


@router.get("/sessions", response_model=ListOf[SessionItem])
def list_sessions(work: Read, who: Who) -> ListOf[SessionItem]:
    """The asker's party's open sessions."""
    found = identity.list_sessions(work, who)
    return ListOf[SessionItem](
        data=[
            SessionItem(
                id=s.id, created_at=s.created_at, expires_at=s.expires_at, address=s.address
            )
            for s in found
        ],
        has_more=False,
    )


@router.post("/password-resets", response_model=Accepted, status_code=202)
def request_reset(body: ResetRequest, work: Write) -> Accepted:
    """Mails a reset link if an account has the address; the answer is the same if not."""
    identity.request_reset(work, email=body.email)
    return Accepted(message="if an account has this address, a reset link is on its way")


@router.post("/password-resets/{token}", response_model=Accepted)
def reset_password(token: Token, body: ResetCreate, work: Write) -> Accepted:
    """A new password from the mailed link; every session of the account ends."""
    identity.reset_password(work, token=token, password=body.password)
    return Accepted(message="your password is changed; log in with it")
