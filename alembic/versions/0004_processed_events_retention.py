"""index processed events by time, for the retention prune

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

The decision service records one row per event it applies, 86 million a day at 1,000
applications/s. Rows older than the topics' retention can never be redelivered, so the
service deletes its own (`PROCESSED_EVENTS_RETENTION_H`); this index finds them without
reading the table.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # CONCURRENTLY, as in 0003: a plain CREATE INDEX would block every decision while it builds.
    with op.get_context().autocommit_block():
        # As in 0003: what a failed concurrent build left behind is dropped first.
        op.drop_index(
            "ix_processed_events_consumer_processed_at",
            table_name="processed_events",
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.create_index(
            "ix_processed_events_consumer_processed_at",
            "processed_events",
            ["consumer", "processed_at"],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_processed_events_consumer_processed_at",
            table_name="processed_events",
            postgresql_concurrently=True,
        )
