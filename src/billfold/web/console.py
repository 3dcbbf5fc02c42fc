"""What every console page shares: who is looking, in which language, the unit of work,
rendering, forms and their CSRF token, and errors told in words.

Pages are server-rendered over the same handlers the API answers with (docs/DECISIONS.md,
"The console renders the API's own answers"): a page calls the API's route function in
its own unit of work, in process, and renders the answer model. So a page can never show
more than the API would show the same principal, and every service rule applies.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from billfold.core import sessions
from billfold.core.access import Principal, Role
from billfold.core.context import Context, Work
from billfold.core.i18n import LOCALES, Formats, negotiate, translations
from billfold.domain.errors import AuthenticationFailed, BillfoldError
from billfold.ids import derived_id

TEMPLATES: Final = Path(__file__).resolve().parent / "templates"
LANGUAGE_COOKIE: Final = "billfold_lang"
FLASH_COOKIE: Final = "billfold_flash"
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _environment(locale: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    fmt = Formats(locale)
    env.globals.update(money=fmt.money, number=fmt.number, date=fmt.date, when=fmt.datetime)
    return env


_ENVIRONMENTS: Final = {locale: _environment(locale) for locale in LOCALES}


def N_(message: str) -> str:
    """Marks a message for the catalog whose text is chosen at run time."""
    return message


# Words the pages show from data (states, kinds, alert types), in words, and in the catalog.
WORDS: Final = {
    "active": N_("active"), "pending": N_("pending"), "trialing": N_("trialing"),
    "past_due": N_("past due"), "suspended": N_("suspended"), "canceled": N_("canceled"),
    "ended": N_("ended"), "invited": N_("invited"), "unverified": N_("unverified"),
    "open": N_("open"), "paid": N_("paid"), "void": N_("void"), "draft": N_("draft"),
    "retired": N_("retired"), "rejected": N_("rejected"), "prepaid": N_("prepaid"),
    "postpaid": N_("postpaid"),
    "top_up": N_("top-up"), "charge": N_("charge"), "usage": N_("usage"), "refund": N_("refund"),
    "payment": N_("payment"), "payout": N_("payout"), "fee": N_("fee"),
    "credit_note": N_("credit note"), "adjustment": N_("adjustment"),
    "usage.spike": N_("Usage spike"), "balance.low": N_("Low balance"),
    "budget.threshold": N_("Budget threshold reached"), "charges": N_("charges"),
    "invoices": N_("invoices"), "statements": N_("statements"),
    "per_unit": N_("Per unit"), "graduated": N_("Graduated"), "volume": N_("Volume"),
    "package": N_("Package"), "percentage": N_("Percentage"), "time_of_day": N_("Time of day"),
    "graduated_percentage": N_("Graduated percentage"), "fixed_fee": N_("fee"),
    "minimum": N_("Minimum"),
    "voucher": N_("voucher"), "credit": N_("promotional credit"), "discount": N_("discount coupon"),
    "succeeded": N_("succeeded"), "failed": N_("failed"), "recharge": N_("auto-recharge"),
    "invoice": N_("invoice"), "expired": N_("expired"), "refunded": N_("refunded"),
    "used": N_("used"), "day": N_("day"), "month": N_("month"), "grant": N_("promotion"),
    "expiry": N_("expiry"), "package.used": N_("Package nearly used"),
    "package.expiring": N_("Package expiring"), "arrears.grace": N_("Overdrawn: grace period"),
    "arrears.suspended": N_("Suspended for arrears"),
    "arrears.terminated": N_("Terminated for arrears"), "arrears.cleared": N_("Arrears settled"),
}  # fmt: skip


def gettext(locale: str, message: str) -> str:
    return str(translations(locale).gettext(message))


@dataclass(frozen=True, slots=True)
class Viewer:
    """The person looking at a page: their principal (None before login), language and
    the CSRF token their forms carry."""

    principal: Principal | None
    locale: str
    csrf: str | None = None
    login_id: str | None = None
    ended: bool = False
    """A session cookie was sent, but its session has ended."""
    pending: bool = False
    """A provider whose application waits for approval: it may look, not act."""

    @property
    def who(self) -> Principal:
        """The principal of a page that needs a login (`person` made sure of it)."""
        assert self.principal is not None
        return self.principal

    @property
    def role(self) -> str | None:
        return None if self.principal is None else str(self.principal.role)

    def t(self, message: str) -> str:
        return gettext(self.locale, message)

    def word(self, value: object) -> str:
        """A state, kind or type from data, in words."""
        text = str(value)
        return self.t(WORDS[text]) if text in WORDS else text.replace("_", " ")


class Redirect(Exception):
    """Answer with a redirect (see `install`): to log in, or after a form."""

    def __init__(self, location: str) -> None:
        self.location = location


class NotHere(Exception):
    """A page this person may not see: answered as a 404 page, in their language."""


PENDING_MAY: Final = (
    "/logout", "/account/language", "/account/password", "/account/email", "/account/totp",
    "/account/session-end",
)  # fmt: skip
"""What a pending provider's forms may do: leave, and look after its own login; nothing
that acts for the provider (the API, likewise, lets it only look and log out)."""


def _cookie(request: Request) -> str | None:
    return request.cookies.get(sessions.SECURE_COOKIE) or request.cookies.get(sessions.COOKIE)


def context_of(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def viewer(request: Request) -> Viewer:
    """Who is looking: the session's person (their account's language), or a visitor
    (the language they chose, or their browser's)."""
    chosen = request.query_params.get("lang") or request.cookies.get(LANGUAGE_COOKIE)
    locale = chosen if chosen in LOCALES else negotiate(request.headers.get("accept-language"))
    token = _cookie(request)
    if token is None:
        return Viewer(None, locale)
    try:
        resolved = sessions.authenticate_session(context_of(request), token)
    except AuthenticationFailed:
        return Viewer(None, locale, ended=True)
    return Viewer(
        resolved.principal,
        resolved.locale,
        sessions.csrf_for(token),
        resolved.login_id,
        pending=resolved.pending,
    )


def person(request: Request, *roles: Role) -> Viewer:
    """The logged-in viewer of a page for `roles`; others are sent to log in, or told
    the page is not theirs."""
    seen = viewer(request)
    if seen.principal is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        reason = "ended" if seen.ended else "login"
        raise Redirect(f"/login?{urlencode({'next': target, 'why': reason})}")
    if roles and seen.principal.role not in roles:
        raise NotHere
    return seen


def render(
    request: Request, seen: Viewer, template: str, status: int = 200, **values: Any
) -> HTMLResponse:
    env = _ENVIRONMENTS[seen.locale]
    flash = request.cookies.get(FLASH_COOKIE)
    from billfold.web.words import detail_table

    body = env.get_template(template).render(
        viewer=seen,
        request=request,
        path=request.url.path,
        flash=flash,
        details=lambda steps: detail_table(steps, seen),
        word=seen.word,
        **values,
    )
    response = HTMLResponse(body, status_code=status)
    response.headers["content-security-policy"] = CSP
    response.headers["cache-control"] = "no-store"
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    if seen.principal is None and request.query_params.get("lang") in LOCALES:
        # A visitor's choice of language holds on the next pages too.
        response.set_cookie(LANGUAGE_COOKIE, seen.locale, max_age=365 * 86400, samesite="lax",
                            path="/")  # fmt: skip
    return response


def redirect(location: str, message: str | None = None) -> RedirectResponse:
    """After a form: back to a page (303, so a reload does not post again), with a note."""
    response = RedirectResponse(location, status_code=303)
    if message is not None:
        response.set_cookie(
            FLASH_COOKIE, quote(message), max_age=60, httponly=True, samesite="lax", path="/"
        )
    return response


def same_origin(request: Request, seen: Viewer) -> None:
    """A form sent from another site is refused, whoever is logged in. This is what stops
    a site from logging a visitor in to an account of its own (login CSRF), where no
    session exists yet to hold a token. A browser says where a request comes from in
    Sec-Fetch-Site; an older one only in Origin (which, under billfold's no-referrer
    policy, a browser may send as "null" even for billfold's own pages)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site in ("same-origin", "none"):
            return
    else:
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return
        if origin.split("://", 1)[-1] == request.headers.get("host", ""):
            return
    raise FormRefused(
        seen.t("This form has expired or did not come from billfold. Reload and try again.")
    )


async def form_of(request: Request, seen: Viewer) -> dict[str, str]:
    """The form's fields, once its CSRF token is checked; a form without the viewer's
    token (another site's, or an old page's) is refused and changes nothing."""
    same_origin(request, seen)
    raw = await request.form()
    fields = {k: v for k, v in raw.items() if isinstance(v, str)}
    given = fields.pop("csrf_token", "")
    if seen.pending and not request.url.path.startswith(PENDING_MAY):
        raise FormRefused(seen.t(_FRIENDLY["provider_pending"]))
    if seen.csrf is None or not secrets.compare_digest(given, seen.csrf):
        raise FormRefused(
            seen.t("This form has expired or did not come from billfold. Reload and try again.")
        )
    return fields


class FormRefused(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


@contextmanager
def unit(request: Request, *, write: bool = False, commit: bool = True) -> Iterator[Work]:
    """The page's one unit of work; a form's is committed when the page is done (a dry
    run's, with `commit=False`, is rolled back: it shows what would happen)."""
    ctx = context_of(request)
    with ctx.work(read_only=not write) as work:
        yield work
        if write and commit:
            work.commit()


def transfer_id(seen: Viewer, request: Request, nonce: str) -> str:
    """A form's money movement id, from the nonce the page put in it: the same form sent
    twice moves the money once."""
    assert seen.principal is not None
    return derived_id(
        "tr", seen.principal.key_id, request.url.path, nonce[:64] or secrets.token_hex(8)
    )


# Error codes whose meaning a person can act on, in their words.
_FRIENDLY: Final = {
    "invalid_credentials": N_("The email or the password is wrong."),
    "email_not_verified": N_("Confirm your email address first: open the link we mailed you."),
    "email_taken": N_("An account with this email exists. Log in instead."),
    "rate_limited": N_("Too many attempts. Wait a minute and try again."),
    "totp_required": N_("Enter the 6-digit code from your authenticator app."),
    "invalid_totp": N_("The code from your authenticator app is wrong or was already used."),
    "invalid_token": N_("This link has expired or was already used. Ask for a new one."),
    "insufficient_funds": N_("Your balance is too low for this. Top up first."),
    "limit_exceeded": N_("This would go past the account's credit limit."),
    "already_subscribed": N_("You already subscribe to this service."),
    "provider_pending": N_("Your provider application is waiting for the platform's approval."),
    "session_ended": N_("Your session has ended. Log in again."),
    "plan_exists": N_("A plan with this code exists. Choose another code."),
    "service_exists": N_("A service with this code exists. Choose another code."),
    "metric_exists": N_("This service has a metric with this code. Choose another code."),
    "payout_exceeds_balance": N_("The provider's balance is smaller than this payout."),
    "provider_not_pending": N_("Only a pending application can be approved or rejected."),
    "subscription_ended": N_("This subscription has already ended."),
    "coupon_not_found": N_("There is no such code. Check how it is spelled."),
    "coupon_expired": N_("This code has expired."),
    "coupon_used_up": N_("This code has been used up."),
    "already_redeemed": N_("You have redeemed this code already."),
    "account_suspended": N_("Your account is suspended for what it owes. Top up first."),
    "gateway_not_configured": N_("This way of paying is not available. Choose another."),
    "gateway_error": N_("The payment service did not answer. Nothing was charged; try again."),
    "package_exists": N_("A package with this code exists. Choose another code."),
    "coupon_code_taken": N_("This code is taken. Choose another."),
}


# What kind of problem it is, before the service's own sentence (which names the field and
# what it needs) where no sentence of the console's fits.
_KINDS: Final = {
    "invalid_request": N_("Check what you entered: %(detail)s"),
    "not_found": N_("Not found: %(detail)s"),
    "conflict": N_("This cannot be done now: %(detail)s"),
    "permission": N_("You may not do this: %(detail)s"),
    "insufficient_funds": N_("Your balance is too low for this. Top up first."),
    "limit_exceeded": N_("This would go past a limit: %(detail)s"),
}


def say(seen: Viewer, error: BillfoldError) -> str:
    """An error in the viewer's words: a known code in their language; else what kind
    of problem it is, in their language, with the service's own sentence."""
    known = _FRIENDLY.get(error.code)
    if known is not None:
        return seen.t(known)
    text = error.message
    detail = text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
    kind = _KINDS.get(error.type)
    return seen.t(kind) % {"detail": detail} if kind is not None else detail


def handle_form(
    request: Request,
    seen: Viewer,
    back: str,
    action: Callable[[Work], str | None],
) -> Response:
    """Runs a form's action in one committed unit of work; back to `back` with its note,
    or with the error in words and nothing changed."""
    try:
        with unit(request, write=True) as work:
            note = action(work)
    except BillfoldError as error:
        return redirect(back, "!" + say(seen, error))
    return redirect(back, note)


def nonce() -> str:
    return secrets.token_urlsafe(12)
