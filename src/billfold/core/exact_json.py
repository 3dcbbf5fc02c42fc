"""JSON bodies parsed exactly: numbers become Decimal or int, never a binary float."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import msgspec
from fastapi import Request

MAX_JSON_DEPTH = 32


# msgspec parses in C, about twice as fast as the standard library's json with its
# parse_float hook, and hands every non-integer number to Decimal as its text. It refuses
# NaN and Infinity (not JSON) and lone UTF-16 surrogates; NUL is the one escape left to
# check, after parsing, and only in a body that spells it.
_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_NUL_TEXT = re.compile(r"\\u0000")
_NUL_BYTES = re.compile(rb"\\u0000")


def _bad_text(value: Any) -> bool:
    """Whether any text in a parsed JSON value holds a NUL or a lone UTF-16 surrogate."""
    if isinstance(value, str):
        return any(ch == "\x00" or "\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_bad_text(k) or _bad_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_bad_text(item) for item in value)
    return False


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
