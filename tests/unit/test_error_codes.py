"""Error codes are stable names, listed once (billfold.domain.errors.ErrorCode)."""

from __future__ import annotations

import re
from pathlib import Path

import billfold
from billfold.domain.errors import ERROR_CODES, BillfoldError

SOURCE = Path(billfold.__file__).parent


def test_every_error_code_the_source_names_is_listed() -> None:
    named: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        named |= set(re.findall(r'\bcode="([a-z_]+)"', text))
        # The HTTP layer's error bodies: error_body(type, code, ...).
        named |= set(
            re.findall(r'error_(?:body|response)\(\s*(?:\d+,\s*)?"[a-z_]+",\s*"([a-z_]+)"', text)
        )
    assert named, "the scan found no codes at all"
    assert named - ERROR_CODES == set()


def test_every_error_type_has_a_listed_default_code() -> None:
    def all_subclasses(cls: type[BillfoldError]) -> set[type[BillfoldError]]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= all_subclasses(sub)
        return found

    for cls in {BillfoldError} | all_subclasses(BillfoldError):
        assert cls.default_code() in ERROR_CODES
        assert not hasattr(cls, "status"), f"{cls.__name__} carries an HTTP status"
