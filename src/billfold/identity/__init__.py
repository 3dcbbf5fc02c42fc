"""People: sign-up, email verification, login sessions and password resets."""

from billfold.identity.service import (
    LoggedIn,
    SignedUp,
    list_sessions,
    login,
    logout,
    request_reset,
    reset_password,
    signup,
    verify_email,
)

__all__ = [
    "LoggedIn",
    "SignedUp",
    "list_sessions",
    "login",
    "logout",
    "request_reset",
    "reset_password",
    "signup",
    "verify_email",
]
