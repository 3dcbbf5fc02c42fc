"""Request and answer bodies of sign-up, verification, sessions and password resets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from billfold.core.schemas import Request


class SignupCreate(Request):
    kind: Literal["user", "provider"]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Annotated[str, Field(min_length=3, max_length=254)]
    password: Annotated[str, Field(min_length=10, max_length=200)]
    currency: Annotated[str | None, Field(pattern="^[A-Z]{3}$")] = None
    locale: Literal["en", "zh-CN"] | None = None


class SignupOut(BaseModel):
    object: Literal["signup"] = "signup"
    id: str = Field(description="The user's or the provider's id.")
    kind: Literal["user", "provider"]
    status: str = Field(description="active; pending for a provider until approved.")


class VerificationCreate(Request):
    token: Annotated[str, Field(min_length=1, max_length=200)]


class VerificationOut(BaseModel):
    object: Literal["email_verification"] = "email_verification"
    status: Literal["verified"]


class SessionCreate(Request):
    email: Annotated[str, Field(min_length=1, max_length=254)]
    password: Annotated[str, Field(min_length=1, max_length=200)]
    totp: Annotated[str | None, Field(max_length=10)] = None


class SessionOut(BaseModel):
    """The logged-in principal, as GET /v1/me shows it, and the session's CSRF token."""

    object: Literal["session"] = "session"
    id: str
    role: str
    user_id: str | None
    provider_id: str | None
    locale: str
    expires_at: datetime
    csrf_token: str = Field(
        description="Send it as X-CSRF-Token with every state-changing request made with "
        "this session's cookie."
    )


class SessionItem(BaseModel):
    object: Literal["session"] = "session"
    id: str
    created_at: datetime
    expires_at: datetime
    address: str | None


class ResetRequest(Request):
    email: Annotated[str, Field(min_length=3, max_length=254)]


class ResetCreate(Request):
    password: Annotated[str, Field(min_length=10, max_length=200)]


class Accepted(BaseModel):
    object: Literal["accepted"] = "accepted"
    message: str


class PasswordChange(Request):
    current_password: Annotated[str, Field(min_length=1, max_length=200)]
    password: Annotated[str, Field(min_length=10, max_length=200)]


class EmailChange(Request):
    password: Annotated[str, Field(min_length=1, max_length=200)]
    email: Annotated[str, Field(min_length=3, max_length=254)]


class Preferences(Request):
    locale: Literal["en", "zh-CN"]


class PreferencesOut(BaseModel):
    object: Literal["preferences"] = "preferences"
    locale: Literal["en", "zh-CN"]


class TotpOut(BaseModel):
    object: Literal["totp_setup"] = "totp_setup"
    secret: str = Field(description="Base32; shown once, for an authenticator app.")
    uri: str = Field(description="The same as an otpauth:// URI, for a QR code.")


class TotpConfirm(Request):
    code: Annotated[str, Field(min_length=6, max_length=10)]


class TotpDisable(Request):
    password: Annotated[str, Field(min_length=1, max_length=200)]


class MemberInvite(Request):
    email: Annotated[str, Field(min_length=3, max_length=254)]


class MemberOut(BaseModel):
    object: Literal["member"] = "member"
    id: str
    email: str
    status: Literal["invited", "active", "unverified", "removed"]
    created_at: datetime


class InvitationAccept(Request):
    password: Annotated[str, Field(min_length=10, max_length=200)]
