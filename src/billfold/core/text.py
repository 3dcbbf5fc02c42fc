"""Checks every service applies to text it is given, and the page of a list."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from billfold.domain.errors import InvalidRequest

T = TypeVar("T")
MAX_PAGE: Final = 1000
MAX_EMAIL_LENGTH: Final = 254
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, and whether more follow it."""

    data: list[T]
    has_more: bool


def check_limit(limit: int) -> int:
    """A page size within 1..MAX_PAGE, or a 400 naming `limit`."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}", param="limit")
    return limit


def clean_text(value: object, *, param: str, max_length: int, required: bool = True) -> str | None:
    """`value` stripped, if it is a text of at most `max_length` characters with no control
    characters (and not empty when required); else a 400 naming `param`."""
    if value is None:
        if required:
            raise InvalidRequest(f"{param} is required", param=param)
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{param} must be a text", param=param)
    text = value.strip()
    if required and not text:
        raise InvalidRequest(f"{param} must not be empty", param=param)
    if len(text) > max_length:
        raise InvalidRequest(f"{param} may have at most {max_length} characters", param=param)
    if any(ord(ch) < 32 for ch in text):
        raise InvalidRequest(f"{param} must not contain control characters", param=param)
    return text


def required_text(value: object, *, param: str, max_length: int) -> str:
    """`clean_text` for a text that must be there."""
    text = clean_text(value, param=param, max_length=max_length)
    assert text is not None
    return text


def clean_email(value: object) -> str:
    email = required_text(value, param="email", max_length=MAX_EMAIL_LENGTH)
    if not _EMAIL.match(email):
        raise InvalidRequest("email must be an address such as ana@example.com", param="email")
    return email
