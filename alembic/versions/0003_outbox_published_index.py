"""index published outbox events by publication time, for the retention prune

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Without it, the prune (`published_at < now() - retention`) read the whole outbox on every
sweep: 77 ms at 282k rows, every 2 s in each API process, and growing with the table.
Partial, so rows enter it only when they are marked published (that update already touches
every index: it changes the predicate column of `ix_outbox_unpublished`).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # CONCURRENTLY: a plain CREATE INDEX would block every insert into the outbox, and so
    # every submission, for as long as the build takes on a large table. It cannot run in a
    # transaction, hence the autocommit block.
    with op.get_context().autocommit_block():
        # A concurrent build that failed (cancelled, a deadlock) leaves an INVALID index of
        # this name, and the upgrade, run again, would stop at "already exists": drop it first.
        op.drop_index(
            "ix_outbox_published", table_name="outbox", postgresql_concurrently=True, if_exists=True
        )
        op.create_index(
            "ix_outbox_published",
            "outbox",
            ["published_at"],
            postgresql_where=sa.text("published_at IS NOT NULL"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_outbox_published",
            table_name="outbox",
            postgresql_concurrently=True,
        )
