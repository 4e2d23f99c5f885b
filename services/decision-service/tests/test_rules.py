from decimal import Decimal, localcontext

import pytest

from decision_service.domain.rules import decide
from prequal_shared.domain import ApplicationStatus

R, P, M = (
    ApplicationStatus.REJECTED,
    ApplicationStatus.PRE_APPROVED,
    ApplicationStatus.MANUAL_REVIEW,
)


@pytest.mark.parametrize(
    ("score", "income", "loan", "expected"),
    [
        (300, "1000000", "1000", R),
        (649, "1000000", "1000", R),  # just below the cut-off, however rich
        (650, "1000000", "1000", P),  # at the cut-off
        (900, "1000000", "1000", P),
        # loan 100000 / 48 = 2083.333...: the boundary in paise
        (700, "2083.33", "100000", M),
        (700, "2083.34", "100000", P),
        # income exactly loan / 48 goes to review
        (700, "100", "4800", M),
        (700, "100.01", "4800", P),
        (700, "99.99", "4800", M),
        (650, "50000", "2400000", M),  # exactly 50000 * 48
        (650, "50000", "2399999.99", P),
        (610, "0.01", "9999999999.99", R),
        (790, "9999999999.99", "9999999999.99", P),
    ],
)
def test_decision_table(score: int, income: str, loan: str, expected: ApplicationStatus) -> None:
    assert (
        decide(cibil_score=score, monthly_income_inr=Decimal(income), loan_amount_inr=Decimal(loan))
        is expected
    )


@pytest.mark.parametrize(("income", "expected"), [("2083.34", P), ("2083.33", M)])
def test_the_decision_is_exact_whatever_the_ambient_decimal_precision(
    income: str, expected: ApplicationStatus
) -> None:
    # With 5 significant digits, 2083.34 * 48 would round to 100000, not over 100000.01.
    with localcontext(prec=5):
        decision = decide(
            cibil_score=700,
            monthly_income_inr=Decimal(income),
            loan_amount_inr=Decimal("100000.01"),
        )
    assert decision == expected
