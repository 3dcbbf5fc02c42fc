"""Request bodies parsed exactly: what loads_exact keeps, and what it refuses."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from billfold.core.exact_json import loads_exact


@pytest.mark.parametrize("body", [b"", b"{", b'{"a": 1} x', b"NaN", b"[Infinity]", b"\xff"])
def test_what_is_not_json_is_a_json_decode_error(body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_exact(body)


@pytest.mark.parametrize(
    "body", [b'"a\\u0000b"', b'{"k\\u0000": 1}', b'["\\ud800"]', b'"\\udc00"', '"\\u0000"']
)
def test_nul_and_lone_surrogates_are_refused(body: bytes | str) -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_exact(body)


def test_numbers_are_exact_and_text_is_kept() -> None:
    parsed = loads_exact(
        b'{"a": 0.1, "b": 1e400, "c": 123456789012345678901234567890, "d": -0.0, '
        b'"e": "\\ud83d\\ude00 \\u00e9", "f": [1.10, 2], "a": 0.30}'
    )
    assert parsed == {
        "a": Decimal("0.30"),
        "b": Decimal("1E+400"),
        "c": 123456789012345678901234567890,
        "d": Decimal("-0.0"),
        "e": "\U0001f600 é",
        "f": [Decimal("1.10"), 2],
    }
    assert str(parsed["f"][0]) == "1.10" and isinstance(parsed["f"][1], int)
    assert loads_exact('{"x": "\\\\u0000 is six characters"}') == {"x": "\\u0000 is six characters"}


def test_nesting_too_deep_is_a_json_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_exact(b"[" * 100_000 + b"]" * 100_000)
