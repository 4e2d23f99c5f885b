"""applications table with updated_at trigger

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("pan_number", sa.String(10), nullable=False),
        sa.Column("applicant_name", sa.String(255), nullable=True),
        sa.Column("monthly_income_inr", sa.Numeric(12, 2), nullable=False),
        sa.Column("loan_amount_inr", sa.Numeric(12, 2), nullable=False),
        sa.Column("loan_type", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="PENDING"),
        sa.Column("cibil_score", sa.Integer(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("monthly_income_inr > 0", name="income_positive"),
        sa.CheckConstraint("loan_amount_inr > 0", name="loan_positive"),
        sa.CheckConstraint(
            "status IN ('PENDING', 'PRE_APPROVED', 'REJECTED', 'MANUAL_REVIEW')", name="status"
        ),
        sa.CheckConstraint(
            "loan_type IS NULL OR "
            "loan_type IN ('PERSONAL', 'HOME', 'AUTO', 'EDUCATION', 'BUSINESS')",
            name="loan_type",
        ),
        sa.CheckConstraint(
            "cibil_score IS NULL OR cibil_score BETWEEN 300 AND 900", name="cibil_score"
        ),
    )
    op.create_index("ix_applications_pan_number", "applications", ["pan_number"])
    op.create_index("ix_applications_status", "applications", ["status"])
    op.create_index("ix_applications_created_at", "applications", ["created_at"])
    op.execute(
        """
        CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at = clock_timestamp();
            RETURN NEW;
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER applications_set_updated_at BEFORE UPDATE ON applications "
        "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS applications_set_updated_at ON applications")
    op.drop_table("applications")
    op.execute("DROP FUNCTION IF EXISTS set_updated_at()")
