"""Pages before login and around it: log in and out, sign up, confirm an address, reset
a password, join a provider's team; and the account page every person has."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from billfold import identity
from billfold.core import sessions
from billfold.core.access import Role
from billfold.core.i18n import LOCALES
from billfold.domain.errors import BillfoldError
from billfold.web.console import (
    LANGUAGE_COOKIE,
    Viewer,
    form_of,
    handle_form,
    person,
    redirect,
    render,
    same_origin,
    say,
    unit,
    viewer,
)

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never an open redirect to another."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _set_session(request: Request, response: Response, token: str, ttl: int) -> None:
    secure = request.url.scheme == "https"
    response.set_cookie(
        sessions.SECURE_COOKIE if secure else sessions.COOKIE,
        token,
        max_age=ttl,
        httponly=True,
        secure=secure,
        samesite="lax",
        path="/",
    )


@router.get("/login")
def login_page(request: Request) -> Response:
    seen = viewer(request)
    if seen.principal is not None:
        return redirect("/")
    why = request.query_params.get("why")
    note = seen.t("Your session has ended. Log in again.") if why == "ended" else None
    return render(
        request,
        seen,
        "console/login.html",
        note=note,
        next=_safe_next(request.query_params.get("next")),
    )


@router.post("/login")
async def login_submit(request: Request) -> Response:
    seen = viewer(request)
    same_origin(request, seen)
    raw = await request.form()
    fields = {k: v for k, v in raw.items() if isinstance(v, str)}
    address = request.client.host if request.client else None

    def attempt() -> Any:
        with unit(request, write=True) as work:
            return identity.login(
                work,
                email=fields.get("email", ""),
                password=fields.get("password", ""),
                totp=fields.get("totp") or None,
                address=address,
            )

    try:
        done = await run_in_threadpool(attempt)
    except BillfoldError as error:
        return render(
            request,
            seen,
            "console/login.html",
            status=401 if error.code != "rate_limited" else 429,
            error=say(seen, error),
            email=fields.get("email", ""),
            need_totp=error.code in ("totp_required", "invalid_totp"),
            next=_safe_next(fields.get("next")),
        )
    response = redirect(_safe_next(fields.get("next")))
    _set_session(
        request, response, done.session.token, request.app.state.ctx.settings.session_ttl_s
    )
    response.set_cookie(LANGUAGE_COOKIE, done.locale, max_age=365 * 86400, samesite="lax", path="/")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    seen = viewer(request)
    if seen.principal is not None:
        await form_of(request, seen)
        principal = seen.principal
        await run_in_threadpool(lambda: _in_unit(request, lambda w: identity.logout(w, principal)))
    response = redirect("/login", seen.t("You are logged out."))
    secure = request.url.scheme == "https"
    response.delete_cookie(
        sessions.SECURE_COOKIE if secure else sessions.COOKIE, path="/", secure=secure
    )
    return response


def _in_unit(request: Request, action: Any) -> Any:
    with unit(request, write=True) as work:
        return action(work)


@router.get("/signup")
def signup_page(request: Request) -> Response:
    return render(request, viewer(request), "console/signup.html", values={})


@router.post("/signup")
async def signup_submit(request: Request) -> Response:
    seen = viewer(request)
    same_origin(request, seen)
    raw = await request.form()
    fields = {k: v for k, v in raw.items() if isinstance(v, str)}

    def attempt() -> Any:
        with unit(request, write=True) as work:
            return identity.signup(
                work,
                kind=fields.get("kind", "user"),
                name=fields.get("name", ""),
                email=fields.get("email", ""),
                password=fields.get("password", ""),
                currency=fields.get("currency") or None,
                locale=seen.locale,
            )

    try:
        done = await run_in_threadpool(attempt)
    except BillfoldError as error:
        fields.pop("password", None)
        return render(
            request, seen, "console/signup.html", status=400, error=say(seen, error), values=fields
        )
    return render(
        request, seen, "console/signed_up.html", kind=done.kind, email=fields.get("email")
    )


@router.get("/verify")
def verify_page(request: Request) -> Response:
    return render(
        request, viewer(request), "console/verify.html", token=request.query_params.get("token", "")
    )


@router.post("/verify")
async def verify_submit(request: Request) -> Response:
    seen = viewer(request)
    same_origin(request, seen)
    raw = await request.form()
    token = str(raw.get("token", ""))
    try:
        await run_in_threadpool(
            lambda: _in_unit(request, lambda w: identity.verify_email(w, token=token))
        )
    except BillfoldError as error:
        return render(
            request, seen, "console/verify.html", status=400, token="", error=say(seen, error)
        )
    return redirect("/login", seen.t("Your email address is confirmed. Log in."))


@router.get("/reset")
def reset_page(request: Request) -> Response:
    return render(
        request, viewer(request), "console/reset.html", token=request.query_params.get("token", "")
    )


@router.post("/reset")
async def reset_submit(request: Request) -> Response:
    seen = viewer(request)
    same_origin(request, seen)
    raw = await request.form()
    fields = {k: v for k, v in raw.items() if isinstance(v, str)}
    token = fields.get("token", "")
    try:
        if token:
            await run_in_threadpool(
                lambda: _in_unit(
                    request,
                    lambda w: identity.reset_password(
                        w, token=token, password=fields.get("password", "")
                    ),
                )
            )
            return redirect("/login", seen.t("Your password is changed. Log in with it."))
        await run_in_threadpool(
            lambda: _in_unit(
                request, lambda w: identity.request_reset(w, email=fields.get("email", ""))
            )
        )
    except BillfoldError as error:
        return render(
            request, seen, "console/reset.html", status=400, token=token, error=say(seen, error)
        )
    return render(request, seen, "console/reset.html", token="", sent=True)


@router.get("/invite")
def invite_page(request: Request) -> Response:
    return render(
        request, viewer(request), "console/invite.html", token=request.query_params.get("token", "")
    )


@router.post("/invite")
async def invite_submit(request: Request) -> Response:
    seen = viewer(request)
    same_origin(request, seen)
    raw = await request.form()
    token, password = str(raw.get("token", "")), str(raw.get("password", ""))
    try:
        await run_in_threadpool(
            lambda: _in_unit(
                request, lambda w: identity.accept_invitation(w, token=token, password=password)
            )
        )
    except BillfoldError as error:
        return render(
            request, seen, "console/invite.html", status=400, token=token, error=say(seen, error)
        )
    return redirect("/login", seen.t("Welcome to the team. Log in with your email and password."))


# --- the account page ------------------------------------------------------------------


@router.get("/account")
def account_page(request: Request) -> Response:
    seen = person(request)
    assert seen.principal is not None
    with unit(request) as work:
        me = identity.account_of(work, seen.principal)
        open_sessions = identity.list_sessions(work, seen.principal)
        members = (
            identity.list_members(work, seen.principal, seen.principal.provider_id)
            if seen.principal.role == Role.PROVIDER and seen.principal.provider_id
            else None
        )
    return render(
        request,
        seen,
        "console/account.html",
        sessions=open_sessions,
        members=members,
        setup=None,
        me=me,
    )


@router.post("/account/{what}")
async def account_submit(request: Request, what: str) -> Response:
    seen = person(request)
    fields = await form_of(request, seen)
    principal = seen.principal
    assert principal is not None

    def act(work: Any) -> str | None:  # noqa: PLR0911 (one answer per form)
        if what == "language":
            identity.set_locale(work, principal, locale=fields.get("locale"))
            return gettext_for(fields.get("locale", "en"), "Your language is saved.")
        if what == "password":
            identity.change_password(
                work,
                principal,
                current_password=fields.get("current_password"),
                password=fields.get("new_password"),
            )
            return seen.t("Your password is changed; your other sessions have ended.")
        if what == "email":
            identity.change_email(
                work, principal, password=fields.get("email_password"), email=fields.get("email")
            )
            return seen.t("Open the link we mailed to the new address to confirm it.")
        if what == "totp-confirm":
            identity.confirm_totp(work, principal, code=fields.get("code"))
            return seen.t("Your second factor is on; logins now ask for a code.")
        if what == "totp-disable":
            identity.disable_totp(work, principal, password=fields.get("password"))
            return seen.t("Your second factor is off.")
        if what == "session-end":
            identity.revoke_session(work, principal, fields.get("session", ""))
            return seen.t("Ended the session.")
        if what == "member-remove" and principal.provider_id:
            identity.remove_member(work, principal, principal.provider_id, fields.get("member", ""))
            return seen.t("The member is removed; their sessions have ended.")
        if what == "member" and principal.provider_id:
            identity.invite_member(
                work, principal, principal.provider_id, email=fields.get("email")
            )
            return seen.t("The invitation is on its way.")
        return None

    if what == "totp":
        return await run_in_threadpool(_totp_setup, request, seen)
    response = await run_in_threadpool(handle_form, request, seen, "/account", act)
    if what == "language" and fields.get("locale") in ("en", "zh-CN"):
        response.set_cookie(
            LANGUAGE_COOKIE, fields["locale"], max_age=365 * 86400, samesite="lax", path="/"
        )
    return response


def _totp_setup(request: Request, seen: Viewer) -> Response:
    assert seen.principal is not None
    try:
        with unit(request, write=True) as work:
            setup = identity.start_totp(work, seen.principal)
    except BillfoldError as error:
        return redirect("/account", "!" + say(seen, error))
    with unit(request) as work:
        me = identity.account_of(work, seen.principal)
        open_sessions = identity.list_sessions(work, seen.principal)
    return render(
        request,
        seen,
        "console/account.html",
        sessions=open_sessions,
        members=None,
        setup=setup,
        me=me,
    )


def gettext_for(locale: str, message: str) -> str:
    from billfold.web.console import gettext

    return gettext(locale if locale in LOCALES else LOCALES[0], message)
