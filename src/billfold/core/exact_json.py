"""JSON bodies parsed exactly: numbers become Decimal or int, never a binary float."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from fastapi import Request

MAX_JSON_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number billfold accepts")


# Escapes that may spell text no database should get: NUL, or half of a surrogate pair.
_SUSPECT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


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
    them, and no text billfold keeps needs them)."""
    try:
        text = body if isinstance(body, str) else body.decode("utf-8")
        parsed = json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
        if _SUSPECT.search(text) and _bad_text(parsed):
            raise json.JSONDecodeError(
                "text must not hold NUL characters or lone surrogates", text, 0
            )
        return parsed
    except ValueError as error:
        if isinstance(error, json.JSONDecodeError):
            raise
        text = body if isinstance(body, str) else body.decode("utf-8", "replace")
        raise json.JSONDecodeError(str(error), text, 0) from None
    except RecursionError:
        text = body if isinstance(body, str) else body.decode("utf-8", "replace")
        raise json.JSONDecodeError("the JSON is nested too deeply", text, 0) from None


class ExactJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_exact(await self.body())
        return self._json
