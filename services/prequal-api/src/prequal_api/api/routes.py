"""HTTP routes: applications and health."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import structlog
from asgi_correlation_id import correlation_id as request_correlation_id
from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import text

from prequal_api.api.decimal_json import DecimalJSONRoute
from prequal_api.api.deps import (
    RelayDep,
    StatementsDep,
    database_errors,
    unit_of_work,
)
from prequal_api.api.schemas import (
    MAX_BODY_BYTES,
    ApplicationAccepted,
    ApplicationIn,
    ApplicationStatusOut,
    Problem,
    ValidationProblem,
)
from prequal_api.domain.applications import ApplicationIntake, application_status
from prequal_shared.domain import mask_pan

router = APIRouter(route_class=DecimalJSONRoute)
log = structlog.stdlib.get_logger(__name__)

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "PostgreSQL is unavailable"}
}


@router.post(
    "/applications",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ApplicationAccepted,
    responses={
        400: {
            "model": Problem,
            "description": "The body is not valid JSON (cut short, NaN, a key given twice);"
            " nothing was stored",
        },
        413: {
            "model": Problem,
            # Plain text when the Content-Length header gave the size away, else JSON.
            "content": {"text/plain": {}},
            "description": f"The body is over {MAX_BODY_BYTES} bytes; nothing was stored",
        },
        422: {"model": ValidationProblem, "description": "Invalid application; nothing was stored"},
        **_UNAVAILABLE,
    },
    summary="Submit a loan application for prequalification",
)
async def create_application(application: ApplicationIn, request: Request) -> Response:
    """Stores the application as PENDING; its decision arrives asynchronously (poll the status)."""
    intake: ApplicationIntake = request.app.state.intake
    # Set by the correlation-id middleware from X-Correlation-ID (or made up) for each request.
    correlation_id = request_correlation_id.get() or ""
    async with database_errors():
        new = await intake.submit(application, correlation_id=correlation_id)
    log.info(
        "application accepted",
        application_id=str(new.id),
        pan=mask_pan(application.pan_number),
    )
    # Rendered here, as the route's response model documents it. Solving a dependency for the
    # intake and letting FastAPI validate and render the returned model cost 11 us a request
    # (the API's own layers, measured apart from server, database and Kafka: docs/performance.md,
    # twelfth look).
    accepted = ApplicationAccepted(application_id=new.id)
    return Response(
        accepted.model_dump_json(),
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )


@router.get(
    "/applications/{application_id}/status",
    response_model=ApplicationStatusOut,
    responses={
        404: {"model": Problem, "description": "No such application"},
        422: {"model": ValidationProblem, "description": "The id is not a UUID"},
        **_UNAVAILABLE,
    },
    summary="Current status of an application",
)
async def get_application_status(
    application_id: uuid.UUID, statements: StatementsDep
) -> ApplicationStatusOut:
    async with unit_of_work(statements) as conn:
        view = await application_status(conn, application_id)
    return ApplicationStatusOut(
        application_id=view.application_id,
        status=view.status,
        cibil_score=view.cibil_score,
        updated_at=view.updated_at,
    )


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", summary="Readiness: PostgreSQL and Kafka answer", response_model=None)
async def ready(statements: StatementsDep, relay: RelayDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        async with asyncio.timeout(2):
            async with statements.connect() as conn:
                await conn.execute(text("SELECT 1"))
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"down: {type(exc).__name__}"
    checks["kafka"] = "ok" if await relay.kafka_reachable(timeout_s=2) else "down"
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse(
        status_code=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"status": "ready" if healthy else "not ready", "checks": checks},
    )
