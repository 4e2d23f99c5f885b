"""Parse request bodies as strict JSON: numbers as Decimal, so money never passes through a
float; NaN, Infinity and a key given twice refused, as a body that is not JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from prequal_api.api.errors import is_our_name


def _reject_constant(name: str) -> Any:
    # NaN and Infinity: Python's json reads them, but they are not JSON.
    raise json.JSONDecodeError(f"{name} is not a number in JSON", "", 0)


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A key given twice: parsers disagree on which value counts (Python's keeps the last,
    others the first), so a proxy or an audit log could see another application than ours."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            # Named only when it is one of our fields: the input is never echoed back.
            name = f'"{key}"' if is_our_name(key) else "a key"
            raise json.JSONDecodeError(f"{name} is given twice", "", 0)
        found[key] = value
    return found


class DecimalJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(
                await self.body(),
                parse_float=Decimal,
                parse_constant=_reject_constant,
                object_pairs_hook=_refuse_repeated_keys,
            )
        return self._json


class DecimalJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def decimal_json_handler(request: Request) -> Response:
            return await handler(DecimalJSONRequest(request.scope, request.receive))

        return decimal_json_handler
