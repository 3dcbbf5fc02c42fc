"""The Chinese catalog has every message the console shows, with the same placeholders."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from billfold.core.i18n import CATALOG, translations

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {**DEFAULT_KEYWORDS, "t": None, "N_": None}
METHODS = [
    ("src/billfold/web/**.py", "python"),
    ("src/billfold/invoicing/document.py", "python"),
    ("src/billfold/invoicing/notices.py", "python"),
    ("src/billfold/web/templates/console/**.html", "jinja2"),
    ("src/billfold/web/templates/invoice.html", "jinja2"),
]
OPTIONS = {
    "src/billfold/web/templates/console/**.html": {"extensions": "jinja2.ext.i18n"},
    "src/billfold/web/templates/invoice.html": {"extensions": "jinja2.ext.i18n"},
}


def _messages() -> set[str]:
    found = extract_from_dir(ROOT, METHODS, OPTIONS, KEYWORDS)
    return {m if isinstance(m, str) else m[0] for _f, _l, m, _c, _x in found if m}


def test_every_message_is_translated_with_its_placeholders() -> None:
    with CATALOG.open("rb") as source:
        catalog = read_po(source)
    known = {m.id: m.string for m in catalog if m.id}
    wanted = _messages()
    assert len(wanted) > 300
    missing = sorted(wanted - known.keys())
    assert missing == [], f"translate these (make messages): {missing}"
    for msgid in wanted:
        translated = known[msgid]
        assert translated, msgid
        names = re.compile(r"%\(\w+\)s")
        assert sorted(names.findall(msgid)) == sorted(names.findall(str(translated))), msgid


def test_the_compiled_catalog_translates() -> None:
    zh = translations("zh-CN")
    assert zh.gettext("Log in") == "登录"
    assert zh.gettext("Hello, %(name)s") % {"name": "Ana"} == "您好，Ana"
    assert translations("en").gettext("Log in") == "Log in"
