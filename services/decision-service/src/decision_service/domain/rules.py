"""The prequalification decision: a pure function, exact to the paisa."""

from __future__ import annotations

from decimal import Decimal

from prequal_shared.domain import ApplicationStatus

MIN_SCORE = 650
TENURE_MONTHS = 48


def decide(
    *, cibil_score: int, monthly_income_inr: Decimal, loan_amount_inr: Decimal
) -> ApplicationStatus:
    """REJECTED below 650; at 650+ PRE_APPROVED when income > loan / 48, else MANUAL_REVIEW.

    `income > loan / 48` is evaluated as `income * 48 > loan`, which is exact in Decimal
    (loan / 48 is not), so an income of exactly loan / 48 goes to review.
    """
    if cibil_score < MIN_SCORE:
        return ApplicationStatus.REJECTED
    if monthly_income_inr * TENURE_MONTHS > loan_amount_inr:
        return ApplicationStatus.PRE_APPROVED
    return ApplicationStatus.MANUAL_REVIEW
