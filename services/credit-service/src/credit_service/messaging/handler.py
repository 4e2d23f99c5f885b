"""Turns a submitted application into a credit report: parse, score, publish."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import structlog

from credit_service.domain.scoring import cibil_score
from prequal_shared.consumer import Record
from prequal_shared.domain import mask_pan
from prequal_shared.errors import PermanentError
from prequal_shared.events import (
    ApplicationSubmittedEvent,
    CreditReportGenerated,
    CreditReportGeneratedEvent,
    decode,
    encode,
    headers_for,
    new_event_fields,
)
from prequal_shared.ids import derived_id
from prequal_shared.kafka import Message, Producer

log = structlog.stdlib.get_logger(__name__)

# The report's event id is derived from the application event's id: a redelivered or replayed
# application yields the very same report, which the decision service recognises as a duplicate.
# It keeps the application event's time ordering (see prequal_shared.ids).
REPORT_NAMESPACE = uuid.UUID("6f1c3c4e-61a4-4c1e-9a43-3f1b1f0c2a55")


def credit_report_for(event: ApplicationSubmittedEvent) -> CreditReportGeneratedEvent:
    application = event.payload
    return CreditReportGeneratedEvent(
        payload=CreditReportGenerated(
            application_id=application.application_id,
            cibil_score=cibil_score(
                pan=application.pan_number,
                monthly_income_inr=application.monthly_income_inr,
                loan_type=application.loan_type,
            ),
            monthly_income_inr=application.monthly_income_inr,
            loan_amount_inr=application.loan_amount_inr,
            loan_type=application.loan_type,
        ),
        **new_event_fields(
            correlation_id=event.correlation_id,
            event_id=derived_id(event.event_id, REPORT_NAMESPACE),
        ),
    )


class CreditReportHandler:
    """Scores a batch and publishes its reports together: one batch per partition, and one
    round of acknowledgements."""

    def __init__(self, *, producer: Producer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def __call__(self, records: Sequence[Record]) -> dict[int, PermanentError]:
        failures: dict[int, PermanentError] = {}
        published: list[tuple[ApplicationSubmittedEvent, CreditReportGeneratedEvent]] = []
        for index, record in enumerate(records):
            try:
                event = decode(ApplicationSubmittedEvent, record.value)
            except PermanentError as exc:
                failures[index] = exc
                continue
            published.append((event, credit_report_for(event)))
        acks = await self._producer.send_many(
            [
                Message(
                    topic=self._topic,
                    key=str(report.payload.application_id).encode(),
                    value=encode(report),
                    headers=headers_for(report),
                )
                for _, report in published
            ],
        )
        # Only when every report is acknowledged is the batch done (and its offsets committed).
        outcomes = await asyncio.gather(*acks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the whole batch is retried; its reports keep their event ids
        for event, report in published:
            log.info(
                "credit report published",
                correlation_id=event.correlation_id,
                application_id=str(report.payload.application_id),
                pan=mask_pan(event.payload.pan_number),
                cibil_score=report.payload.cibil_score,
            )
        return failures
