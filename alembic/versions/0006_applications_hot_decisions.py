"""applications: a decision rewrites the row in place (HOT), without new index entries

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

A decision sets `status` and `cibil_score` (and the trigger `updated_at`). `status` was
indexed, so every decision was a non-HOT update: a new row version on another page and a new
entry in each of the table's four indexes. Nothing the services run reads by status (they
read by id); without `ix_applications_status` no index covers a column a decision changes, so
PostgreSQL can keep the new version on the same page and add no index entries, if the page
has room: inserts now leave a tenth of each new page free for it.

`fillfactor` applies to pages filled from now on; rows already stored are left as they are.
Neither statement blocks inserts or updates: the index is dropped CONCURRENTLY, and the
storage parameter takes a SHARE UPDATE EXCLUSIVE lock.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Outside the migrations' transaction: upgraded from 0004 in one go, that transaction holds
    # 0005's lock on `outbox` (ACCESS EXCLUSIVE), and submissions would wait on it for as long
    # as this ALTER waits for its own lock (behind a running VACUUM, say).
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE applications SET (fillfactor = 90)")
        op.drop_index(
            "ix_applications_status",
            table_name="applications",
            postgresql_concurrently=True,
            if_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        # A failed concurrent build leaves an INVALID index of this name behind.
        op.drop_index(
            "ix_applications_status",
            table_name="applications",
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.create_index(
            "ix_applications_status", "applications", ["status"], postgresql_concurrently=True
        )
        op.execute("ALTER TABLE applications RESET (fillfactor)")
