"""JSON bodies parsed exactly: numbers become Decimal or int, never a binary float."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import Request

MAX_JSON_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number billfold accepts")


def loads_exact(body: bytes | str) -> Any:
    """Parses JSON with every non-integer number as an exact Decimal; refuses NaN and Infinity."""
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_refuse_constant)
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
