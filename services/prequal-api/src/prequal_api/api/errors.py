"""Every error the API can answer with, mapped to HTTP in one place."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from prequal_api.api.schemas import ApplicationAccepted, ApplicationIn, ApplicationStatusOut
from prequal_shared.errors import ApplicationNotFoundError, DependencyUnavailableError

log = structlog.stdlib.get_logger(__name__)


UNKNOWN_KEY = "<unknown key>"
# What an error may name: where the problem is, and our own fields (those a client may not
# set, such as status, included). Any other key is the client's text, never echoed: it may
# be a PAN, or a name.
_OUR_NAMES = frozenset({"body", "path", "query", "header", "cookie"}).union(
    ApplicationIn.model_fields, ApplicationAccepted.model_fields, ApplicationStatusOut.model_fields
)


def is_our_name(key: str) -> bool:
    """Whether an error may show this key of the client's request."""
    return key in _OUR_NAMES


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo the input back: a rejected body may still hold a valid PAN, as a value or,
    # for a key we do not know, in the error's location.
    return [
        {
            "loc": [
                part if isinstance(part, int) or is_our_name(part) else UNKNOWN_KEY
                for part in err.get("loc", ())
            ],
            "msg": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]


def _not_json_detail(error: dict[str, Any]) -> str:
    """What is wrong with a body that is not JSON, and where: the parser's own words (they
    never quote the input)."""
    reason = (error.get("ctx") or {}).get("error", "it cannot be parsed")
    loc = error.get("loc", ())
    where = f" (character {loc[1]})" if len(loc) > 1 and loc[1] else ""
    return f"the body is not valid JSON: {reason}{where}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        not_json = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
        if not_json is not None:
            return JSONResponse(
                status_code=status.HTTP_400_BAD_REQUEST,
                content={"detail": _not_json_detail(not_json)},
            )
        errors = _field_errors(exc)
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) or "body" for e in errors)
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"detail": f"invalid request: {fields}", "errors": errors},
        )

    @app.exception_handler(ApplicationNotFoundError)
    async def not_found(_: Request, exc: ApplicationNotFoundError) -> JSONResponse:
        return JSONResponse(status_code=status.HTTP_404_NOT_FOUND, content={"detail": str(exc)})

    @app.exception_handler(DependencyUnavailableError)
    async def unavailable(_: Request, exc: DependencyUnavailableError) -> JSONResponse:
        # The client is told only that; the log says what it was (a refused connection, the
        # pool's wait, a statement timeout, ...).
        log.warning("dependency unavailable", error=str(exc), cause=repr(exc.__cause__))
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": f"{exc}; try again shortly"},
            headers={"Retry-After": "2"},
        )
