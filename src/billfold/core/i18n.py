"""The languages of the console, mail and invoices: gettext catalogs (Babel), and
numbers, money and dates formatted for the reader's locale.

English is the source language; `web/locale/zh_CN/LC_MESSAGES/messages.po` holds the
Simplified Chinese. The catalog is compiled in memory when the process starts, so there
is no build step and no compiled file to keep in step.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Final

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal
from babel.support import NullTranslations, Translations

LOCALES: Final = ("en", "zh-CN")
CATALOG: Final = (
    Path(__file__).resolve().parent.parent
    / "web"
    / "locale"
    / "zh_CN"
    / "LC_MESSAGES"
    / "messages.po"
)


def babel_locale(locale: str) -> Locale:
    return Locale.parse(locale.replace("-", "_"))


@cache
def translations(locale: str) -> NullTranslations:
    if locale != "zh-CN":
        return NullTranslations()
    with CATALOG.open("rb") as source:
        catalog = read_po(source, locale="zh_CN")
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def negotiate(accept_language: str | None) -> str:
    """The best of our locales for an Accept-Language header; English by default."""
    best: tuple[float, str] = (0.0, "en")
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        chosen = "zh-CN" if tag.startswith("zh") else "en" if tag.startswith("en") else None
        if chosen is not None and quality > best[0]:
            best = (quality, chosen)
    return best[1]


class Formats:
    """Amounts, numbers and dates as a reader of one locale writes them."""

    def __init__(self, locale: str) -> None:
        self.locale = locale
        self._babel = babel_locale(locale)

    def money(self, amount: object, currency: str | None) -> str:
        """Exact: every digit the amount has, and at least the currency's usual ones."""
        if amount is None or amount == "":
            return "—"
        value = Decimal(str(amount))
        if not currency:
            return self.number(value)
        return format_currency(value, currency, locale=self._babel, decimal_quantization=False)

    def number(self, value: object) -> str:
        if value is None or value == "":
            return "—"
        return format_decimal(Decimal(str(value)), locale=self._babel, decimal_quantization=False)

    def date(self, moment: datetime | None) -> str:
        return "—" if moment is None else format_date(moment, "medium", locale=self._babel)

    def datetime(self, moment: datetime | None) -> str:
        if moment is None:
            return "—"
        return format_datetime(moment, "medium", tzinfo=None, locale=self._babel) + " UTC"
