"""The API's use cases. Stateless: the connection, or the writer, is the caller's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from prequal_api.api.schemas import ApplicationIn
from prequal_api.persistence import repository
from prequal_api.persistence.repository import NewApplication, OutboxMessage
from prequal_api.persistence.writer import ApplicationWriter
from prequal_shared.db import DriverConnection
from prequal_shared.domain import ApplicationStatus
from prequal_shared.errors import ApplicationNotFoundError
from prequal_shared.events import (
    ApplicationSubmitted,
    ApplicationSubmittedEvent,
    encode,
    headers_for,
    new_event_fields,
)
from prequal_shared.ids import new_id


@dataclass(frozen=True, slots=True)
class StatusView:
    application_id: uuid.UUID
    status: ApplicationStatus
    cibil_score: int | None
    updated_at: datetime


def new_application(
    application: ApplicationIn, *, correlation_id: str, topic: str
) -> NewApplication:
    """A PENDING application with a fresh id, and the event that announces it."""
    application_id = new_id()
    fields = application.model_dump()
    event = ApplicationSubmittedEvent(
        payload=ApplicationSubmitted(application_id=application_id, **fields),
        **new_event_fields(correlation_id=correlation_id),
    )
    return NewApplication(
        id=application_id,
        pan_number=application.pan_number,
        applicant_name=application.applicant_name,
        monthly_income_inr=application.monthly_income_inr,
        loan_amount_inr=application.loan_amount_inr,
        loan_type=None if application.loan_type is None else application.loan_type.value,
        event=OutboxMessage(
            event_id=event.event_id,
            topic=topic,
            key=str(application_id).encode(),
            payload=encode(event),
            headers={name: value.decode() for name, value in headers_for(event)},
        ),
    )


class ApplicationIntake:
    """Accepts applications: each is stored as PENDING with its event before `submit`
    returns (the writer hands committed events on to the outbox relay)."""

    def __init__(self, writer: ApplicationWriter, *, topic: str) -> None:
        self._writer = writer
        self._topic = topic

    async def submit(self, application: ApplicationIn, *, correlation_id: str) -> NewApplication:
        new = new_application(application, correlation_id=correlation_id, topic=self._topic)
        await self._writer.add(new)
        return new


async def application_status(conn: DriverConnection, application_id: uuid.UUID) -> StatusView:
    found = await repository.get_status(conn, application_id)
    if found is None:
        msg = f"application {application_id} not found"
        raise ApplicationNotFoundError(msg)
    status, cibil_score, updated_at = found
    return StatusView(
        application_id=application_id,
        status=ApplicationStatus(status),
        cibil_score=cibil_score,
        updated_at=updated_at,
    )
