"""Turns a credit report into a decision: parse, decide, record it once."""

from __future__ import annotations

import pybreaker
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from decision_service.domain.rules import decide
from decision_service.messaging.breaker import guarded
from decision_service.persistence.repository import record_decision
from prequal_shared.consumer import Record
from prequal_shared.events import CreditReportGeneratedEvent, decode

log = structlog.stdlib.get_logger(__name__)


class DecisionHandler:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        breaker: pybreaker.CircuitBreaker,
        consumer_name: str,
    ) -> None:
        self._sessions = sessions
        self._breaker = breaker
        self._consumer_name = consumer_name

    async def __call__(self, record: Record) -> None:
        event = decode(CreditReportGeneratedEvent, record.value)
        report = event.payload
        structlog.contextvars.bind_contextvars(
            correlation_id=event.correlation_id, application_id=str(report.application_id)
        )
        status = decide(
            cibil_score=report.cibil_score,
            monthly_income_inr=report.monthly_income_inr,
            loan_amount_inr=report.loan_amount_inr,
        )
        with guarded(self._breaker):
            async with self._sessions.begin() as session:
                outcome = await record_decision(
                    session,
                    consumer=self._consumer_name,
                    event_id=event.event_id,
                    application_id=report.application_id,
                    status=status,
                    cibil_score=report.cibil_score,
                )
        log.info(
            "decision recorded", status=status, cibil_score=report.cibil_score, outcome=outcome
        )
