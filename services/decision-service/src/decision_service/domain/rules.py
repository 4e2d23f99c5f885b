"""The prequalification decision: a pure function, exact to the paisa."""

from __future__ import annotations

from decimal import Decimal, localcontext

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
    # Exact whatever precision the thread's decimal context was given elsewhere: the product
    # of a 12-digit amount and 48 has at most 14 digits.
    with localcontext(prec=28):
        affordable = monthly_income_inr * TENURE_MONTHS > loan_amount_inr
    return ApplicationStatus.PRE_APPROVED if affordable else ApplicationStatus.MANUAL_REVIEW
