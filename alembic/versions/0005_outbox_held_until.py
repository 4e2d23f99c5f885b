"""outbox: a relay's hold on events its producer still has

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

With several API processes, each relay's sweep left alone only the events its own producer
still held (one Kafka could not take yet, a partition without enough in-sync replicas), so
another process's sweep claimed them past the grace period, sent copies and waited on them.
A relay now writes how long it holds such events; the sweeps of the others skip them until
then. A nullable column without a default: adding it rewrites nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("held_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "held_until")
