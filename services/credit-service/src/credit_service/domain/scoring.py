"""The simulated CIBIL score: a pure function of the application, documented in the README."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from prequal_shared.domain import LoanType

SCORE_MIN = 300
SCORE_MAX = 900
BASE_SCORE = 650
FIXED_SCORES = {"ABCDE1234F": 790, "FGHIJ5678K": 610}
HIGH_INCOME = Decimal("75000")
LOW_INCOME = Decimal("30000")
LOAN_TYPE_ADJUSTMENT = {LoanType.PERSONAL: -10, LoanType.HOME: +10}


def pan_variation(pan: str) -> int:
    """A stable value in [-5, +5] derived from the PAN, so re-scoring gives the same score."""
    digest = hashlib.sha256(pan.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 11 - 5


def cibil_score(*, pan: str, monthly_income_inr: Decimal, loan_type: LoanType | None) -> int:
    if pan in FIXED_SCORES:
        return FIXED_SCORES[pan]
    score = BASE_SCORE
    if monthly_income_inr > HIGH_INCOME:
        score += 40
    elif monthly_income_inr < LOW_INCOME:
        score -= 20
    if loan_type is not None:
        score += LOAN_TYPE_ADJUSTMENT.get(loan_type, 0)
    score += pan_variation(pan)
    return max(SCORE_MIN, min(SCORE_MAX, score))
