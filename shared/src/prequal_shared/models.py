"""Table definitions: the one copy the API, the decision service and Alembic share."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
MONEY = Numeric(12, 2, asdecimal=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Application(Base):
    __tablename__ = "applications"
    __table_args__ = (
        CheckConstraint("monthly_income_inr > 0", name="income_positive"),
        CheckConstraint("loan_amount_inr > 0", name="loan_positive"),
        CheckConstraint(
            "status IN ('PENDING', 'PRE_APPROVED', 'REJECTED', 'MANUAL_REVIEW')", name="status"
        ),
        CheckConstraint(
            "loan_type IS NULL OR "
            "loan_type IN ('PERSONAL', 'HOME', 'AUTO', 'EDUCATION', 'BUSINESS')",
            name="loan_type",
        ),
        CheckConstraint(
            "cibil_score IS NULL OR cibil_score BETWEEN 300 AND 900", name="cibil_score"
        ),
        # Room on each page for the decision's new row version: with no index on a column the
        # decision changes, it is then a HOT update (migration 0006).
        {"postgresql_with": {"fillfactor": 90}},
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    pan_number: Mapped[str] = mapped_column(String(10), index=True)
    applicant_name: Mapped[str | None] = mapped_column(String(255))
    monthly_income_inr: Mapped[Decimal] = mapped_column(MONEY)
    loan_amount_inr: Mapped[Decimal] = mapped_column(MONEY)
    loan_type: Mapped[str | None] = mapped_column(String(16))
    # Not indexed: the decision's update stays HOT (migration 0006).
    status: Mapped[str] = mapped_column(String(16), server_default="PENDING")
    cibil_score: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OutboxEvent(Base):
    """An event written in the same transaction as the row it announces; the relay publishes it."""

    __tablename__ = "outbox"
    __table_args__ = (
        # The sweep's work list.
        Index("ix_outbox_unpublished", "created_at", postgresql_where=text("published_at IS NULL")),
        # Rows an earlier relay marked published instead of deleting them: the relay deletes
        # them after an upgrade, through this index (empty otherwise).
        Index(
            "ix_outbox_published", "published_at", postgresql_where=text("published_at IS NOT NULL")
        ),
    )

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    topic: Mapped[str] = mapped_column(String(249))
    message_key: Mapped[bytes] = mapped_column(LargeBinary)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Set only by versions that marked published events instead of deleting them: this one
    # deletes such rows (`delete_marked`), and leaves it null.
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set by a relay whose producer holds the event unacknowledged: other relays' sweeps
    # leave it alone until then (the row is deleted once the event is published).
    held_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProcessedEvent(Base):
    """Which consumer has applied which event: duplicates are recognised by event id."""

    __tablename__ = "processed_events"
    __table_args__ = (
        PrimaryKeyConstraint("consumer", "event_id"),
        # The retention prune's: a consumer's oldest first. `processed_at` only grows, so
        # inserts land on the rightmost page of each consumer's range.
        Index("ix_processed_events_consumer_processed_at", "consumer", "processed_at"),
    )

    consumer: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Decision(Base):
    """The audit record of a decision; the primary key makes a second decision impossible."""

    __tablename__ = "decisions"

    application_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    status: Mapped[str] = mapped_column(String(16))
    cibil_score: Mapped[int] = mapped_column(Integer)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
