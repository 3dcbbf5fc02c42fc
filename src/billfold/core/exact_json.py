"""JSON bodies parsed exactly: numbers become Decimal or int, never a binary float."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import msgspec
from fastapi import Request

MAX_JSON_DEPTH = 32
"""How deep free-form JSON that billfold keeps (an event's properties) may nest."""


# msgspec parses in C, about twice as fast as the standard library's json with its
# parse_float hook, and hands every non-integer number to Decimal as its text. It refuses
# NaN and Infinity (not JSON) and lone UTF-16 surrogates; NUL is the one escape left to
# check, after parsing, and only in a body that spells it. It refuses a body nested past
# Python's recursion limit (about 1,000 levels); what it accepts is walked without
# recursion here, so that no depth it lets through can fail a request with a 500.
_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_NUL_TEXT = re.compile(r"\\u0000")
_NUL_BYTES = re.compile(rb"\\u0000")


def _bad(text: str) -> bool:
    return any(ch == "\x00" or "\ud800" <= ch <= "\udfff" for ch in text)


def _bad_text(value: Any) -> bool:
    """Whether any text in a parsed JSON value holds a NUL or a lone UTF-16 surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _bad(item):
                return True
        elif isinstance(item, dict):
            if any(_bad(key) for key in item):
                return True
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def nested_deeper(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests objects and arrays more than `limit` deep
    (`{}` is one level); walked level by level, without recursion."""
    level = [value]
    for _ in range(limit):
        below: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                below.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                below.extend(v for v in item if isinstance(v, dict | list))
        if not below:
            return False
        level = below
    return True


def loads_exact(body: bytes | str) -> Any:
    """Parses JSON with every non-integer number as an exact Decimal; refuses NaN and
    Infinity, and text holding NUL characters or lone surrogates (PostgreSQL refuses
    them, and no text billfold keeps needs them). Errors are json.JSONDecodeError."""
    try:
        parsed = _DECODER.decode(body)
    except msgspec.DecodeError as error:
        raise json.JSONDecodeError(str(error), _text(body), 0) from None
    except RecursionError:
        raise json.JSONDecodeError("the JSON is nested too deeply", _text(body), 0) from None
    spelled = _NUL_TEXT.search(body) if isinstance(body, str) else _NUL_BYTES.search(body)
    if spelled and _bad_text(parsed):
        raise json.JSONDecodeError(
            "text must not hold NUL characters or lone surrogates", _text(body), 0
        )
    return parsed


def _text(body: bytes | str) -> str:
    return body if isinstance(body, str) else body.decode("utf-8", "replace")


class ExactJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_exact(await self.body())
        return self._json
