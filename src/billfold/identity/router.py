"""Sign-up, email verification, sessions and password resets over HTTP."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Response

from billfold import identity
from billfold.core import sessions
from billfold.core.access import Principal
from billfold.core.http import Read, SegmentRouter, UnitOfWorkRoute, Write, get_principal
from billfold.core.schemas import ListOf
from billfold.identity.schemas import (
    Accepted,
    EmailChange,
    InvitationAccept,
    MemberInvite,
    MemberOut,
    PasswordChange,
    Preferences,
    PreferencesOut,
    ResetCreate,
    ResetRequest,
    SessionCreate,
    SessionItem,
    SessionOut,
    SignupCreate,
    SignupOut,
    TotpConfirm,
    TotpDisable,
    TotpOut,
    VerificationCreate,
    VerificationOut,
)
from billfold.parties.schemas import ProviderOut

router = SegmentRouter(prefix="/v1", route_class=UnitOfWorkRoute, tags=["identity"])
Who = Annotated[Principal, Depends(get_principal)]
Token = Annotated[str, Path(min_length=1, max_length=200)]
ProviderId = Annotated[str, Path(min_length=1, max_length=64)]


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
    done = identity.login(
        work, email=body.email, password=body.password, totp=body.totp, address=address
    )
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


@router.delete("/sessions/{session_id}", status_code=204)
def revoke_session(
    session_id: Annotated[str, Path(min_length=1, max_length=64)], work: Write, who: Who
) -> None:
    """Ends one of the asker's own open sessions (as listed by GET /v1/sessions)."""
    identity.revoke_session(work, who, session_id)


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


@router.post("/providers/{provider_id}/approve", response_model=ProviderOut)
def approve_provider(provider_id: ProviderId, work: Write, who: Who) -> ProviderOut:
    """Activates a provider application (admin), and mails the applicant."""
    return ProviderOut.of(identity.decide_application(work, who, provider_id, approve=True))


@router.post("/providers/{provider_id}/reject", response_model=ProviderOut)
def reject_provider(provider_id: ProviderId, work: Write, who: Who) -> ProviderOut:
    """Turns down a provider application (admin), and mails the applicant; it can then
    look, and act on nothing."""
    return ProviderOut.of(identity.decide_application(work, who, provider_id, approve=False))


@router.post("/me/password", response_model=Accepted)
def change_password(body: PasswordChange, work: Write, who: Who) -> Accepted:
    """A new password for the logged-in person; their other sessions end."""
    identity.change_password(
        work, who, current_password=body.current_password, password=body.password
    )
    return Accepted(message="your password is changed; your other sessions have ended")


@router.post("/me/email", response_model=Accepted, status_code=202)
def change_email(body: EmailChange, work: Write, who: Who) -> Accepted:
    """Mails a confirmation link to the new address; it takes effect once opened."""
    identity.change_email(work, who, password=body.password, email=body.email)
    return Accepted(message="open the link we mailed to the new address to confirm it")


@router.post("/me/preferences", response_model=PreferencesOut)
def set_preferences(body: Preferences, work: Write, who: Who) -> PreferencesOut:
    """The person's language, for their console and mail."""
    return PreferencesOut(locale=identity.set_locale(work, who, locale=body.locale))


@router.post("/me/totp", response_model=TotpOut, status_code=201)
def start_totp(work: Write, who: Who) -> TotpOut:
    """A new second-factor secret; it is required at login once a code confirms it."""
    setup = identity.start_totp(work, who)
    return TotpOut(secret=setup.secret, uri=setup.uri)


@router.post("/me/totp/confirm", response_model=Accepted)
def confirm_totp(body: TotpConfirm, work: Write, who: Who) -> Accepted:
    identity.confirm_totp(work, who, code=body.code)
    return Accepted(message="your second factor is on; logins now ask for a code")


@router.post("/me/totp/disable", response_model=Accepted)
def disable_totp(body: TotpDisable, work: Write, who: Who) -> Accepted:
    identity.disable_totp(work, who, password=body.password)
    return Accepted(message="your second factor is off")


@router.get("/providers/{provider_id}/members", response_model=ListOf[MemberOut])
def list_members(provider_id: ProviderId, work: Read, who: Who) -> ListOf[MemberOut]:
    """The provider's team: its logins and their state."""
    found = identity.list_members(work, who, provider_id)
    return ListOf[MemberOut](
        data=[
            MemberOut(id=m.id, email=m.email, status=m.status, created_at=m.created_at)
            for m in found
        ],
        has_more=False,
    )


@router.post("/providers/{provider_id}/members", response_model=MemberOut, status_code=201)
def invite_member(provider_id: ProviderId, body: MemberInvite, work: Write, who: Who) -> MemberOut:
    """Mails an invitation to join the provider's team (a week to accept)."""
    m = identity.invite_member(work, who, provider_id, email=body.email)
    return MemberOut(id=m.id, email=m.email, status="invited", created_at=m.created_at)


@router.delete("/providers/{provider_id}/members/{member_id}", status_code=204)
def remove_member(
    provider_id: ProviderId,
    member_id: Annotated[str, Path(min_length=1, max_length=64)],
    work: Write,
    who: Who,
) -> None:
    """Takes a member off the team: its sessions end, it can no longer log in."""
    identity.remove_member(work, who, provider_id, member_id)


@router.post("/invitations/{token}", response_model=Accepted)
def accept_invitation(token: Token, body: InvitationAccept, work: Write) -> Accepted:
    """The invited member chooses a password; then they can log in."""
    identity.accept_invitation(work, token=token, password=body.password)
    return Accepted(message="welcome to the team; log in with your email and password")
