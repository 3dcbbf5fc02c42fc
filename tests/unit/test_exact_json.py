"""Request bodies parsed exactly: what loads_exact keeps, and what it refuses."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from billfold.core.exact_json import loads_exact, nested_deeper


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


def _nest(levels: int, leaf: str = "1") -> str:
    return '{"a": ' * levels + leaf + "}" * levels


def test_a_deep_body_that_spells_nul_is_refused_not_an_error() -> None:
    # Nested as deep as the parser allows: the NUL check walks it without recursion
    # (a recursive walk raised RecursionError here, which answered 500).
    with pytest.raises(json.JSONDecodeError):
        loads_exact(_nest(900, '"\\u0000"'))
    assert loads_exact(_nest(900, '"ok \\u00e9"')) is not None
    with pytest.raises(json.JSONDecodeError):  # Past what the parser takes: refused.
        loads_exact("[" * 5000 + "]" * 5000)


def test_nesting_is_measured_level_by_level() -> None:
    assert not nested_deeper(loads_exact(_nest(32)))
    assert nested_deeper(loads_exact(_nest(33)))
    assert not nested_deeper(loads_exact('[{"a": [1, {}]}, 2, "x"]'), limit=4)
    assert nested_deeper(loads_exact('[{"a": [1, {"b": []}]}]'), limit=4)
    assert not nested_deeper("text") and not nested_deeper(7)
    assert nested_deeper(loads_exact(_nest(900)))
