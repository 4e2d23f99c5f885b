"""Turns credit reports into decisions: parse, decide, record the batch in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

import pybreaker
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from decision_service.domain.rules import decide
from decision_service.messaging.breaker import guarded
from decision_service.persistence.repository import PendingDecision, record_decisions
from prequal_shared.consumer import Record
from prequal_shared.db import driver_connection
from prequal_shared.errors import (
    InconsistentEventError,
    PermanentError,
    UnknownApplicationError,
)
from prequal_shared.events import CreditReportGeneratedEvent, decode

log = structlog.stdlib.get_logger(__name__)


class DecisionHandler:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        breaker: pybreaker.CircuitBreaker,
        consumer_name: str,
    ) -> None:
        self._engine = engine
        self._breaker = breaker
        self._consumer_name = consumer_name

    async def __call__(self, records: Sequence[Record]) -> dict[int, PermanentError]:
        failures: dict[int, PermanentError] = {}
        parsed: list[tuple[int, CreditReportGeneratedEvent, PendingDecision]] = []
        for index, record in enumerate(records):
            try:
                event = decode(CreditReportGeneratedEvent, record.value)
            except PermanentError as exc:
                failures[index] = exc
                continue
            report = event.payload
            status = decide(
                cibil_score=report.cibil_score,
                monthly_income_inr=report.monthly_income_inr,
                loan_amount_inr=report.loan_amount_inr,
            )
            parsed.append(
                (
                    index,
                    event,
                    PendingDecision(
                        event_id=event.event_id,
                        application_id=report.application_id,
                        status=status,
                        cibil_score=report.cibil_score,
                        monthly_income_inr=report.monthly_income_inr,
                        loan_amount_inr=report.loan_amount_inr,
                    ),
                )
            )
        if not parsed:
            # Nothing to ask the database: the breaker must not count this as a call that
            # succeeded (it would close a half-open circuit while PostgreSQL is still down),
            # nor refuse it while open (poison goes to the DLQ, whatever the database's state).
            return failures
        with guarded(self._breaker):
            async with driver_connection(self._engine) as conn, conn.transaction():
                outcome = await record_decisions(
                    conn, consumer=self._consumer_name, decisions=[d for _, _, d in parsed]
                )
        # Told apart by identity: a batch may hold several reports for one application.
        applied = {id(decision) for decision in outcome.applied}
        contradicted = {id(decision) for decision in outcome.contradicted}
        for index, event, decision in parsed:
            if decision.application_id in outcome.unknown_applications:
                failures[index] = UnknownApplicationError(
                    f"application {decision.application_id} does not exist"
                )
                continue
            if id(decision) in contradicted:
                failures[index] = InconsistentEventError(
                    f"the report's amounts are not those of application {decision.application_id}"
                )
                continue
            if id(decision) in applied:
                log.info(
                    "decision recorded",
                    correlation_id=event.correlation_id,
                    application_id=str(decision.application_id),
                    status=decision.status,
                    cibil_score=decision.cibil_score,
                )
            else:  # a duplicate, or the application was decided already: nothing changed
                log.info(
                    "report changed nothing",
                    correlation_id=event.correlation_id,
                    application_id=str(decision.application_id),
                    event_id=str(event.event_id),
                )
        return failures
