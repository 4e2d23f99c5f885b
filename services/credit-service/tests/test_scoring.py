from decimal import Decimal

import pytest

from credit_service.domain import scoring
from credit_service.domain.scoring import cibil_score, pan_variation
from prequal_shared.domain import LoanType

# PANs whose variation is 0, so each row isolates one rule (checked below).
NEUTRAL = "AAAAA0024A"


def test_neutral_pan_has_no_variation() -> None:
    assert pan_variation(NEUTRAL) == 0


@pytest.mark.parametrize(
    ("pan", "income", "loan_type", "expected"),
    [
        ("ABCDE1234F", "1", None, 790),  # fixed by the product, whatever the income
        ("ABCDE1234F", "1000000", "HOME", 790),
        ("FGHIJ5678K", "1000000", "HOME", 610),
        (NEUTRAL, "50000", None, 650),  # base
        (NEUTRAL, "75000", None, 650),  # not > 75,000
        (NEUTRAL, "75000.01", None, 690),  # > 75,000
        (NEUTRAL, "30000", None, 650),  # not < 30,000
        (NEUTRAL, "29999.99", None, 630),  # < 30,000
        (NEUTRAL, "50000", "PERSONAL", 640),  # unsecured
        (NEUTRAL, "50000", "HOME", 660),  # secured
        (NEUTRAL, "50000", "AUTO", 650),
        (NEUTRAL, "50000", "EDUCATION", 650),
        (NEUTRAL, "50000", "BUSINESS", 650),
        (NEUTRAL, "100000", "HOME", 700),
        (NEUTRAL, "100", "PERSONAL", 620),
    ],
)
def test_score_table(pan: str, income: str, loan_type: str | None, expected: int) -> None:
    assert (
        cibil_score(
            pan=pan,
            monthly_income_inr=Decimal(income),
            loan_type=LoanType(loan_type) if loan_type else None,
        )
        == expected
    )


def test_variation_is_deterministic_and_within_five_points() -> None:
    pans = [f"ABCDE{n:04d}F" for n in range(2000)]
    variations = [pan_variation(pan) for pan in pans]
    assert variations == [pan_variation(pan) for pan in pans]
    assert set(variations) == set(range(-5, 6))


@pytest.mark.parametrize(("base", "expected"), [(2000, 900), (-2000, 300)])
def test_scores_are_kept_within_the_cibil_range(
    monkeypatch: pytest.MonkeyPatch, base: int, expected: int
) -> None:
    # No real application comes near either end (the adjustments add up to at most 60
    # points), so the clamp is shown with a base score pushed past it.
    monkeypatch.setattr(scoring, "BASE_SCORE", base)
    for income in ("0.01", "1000000000"):
        for loan_type in (None, *LoanType):
            score = cibil_score(
                pan="PQRST0001Z", monthly_income_inr=Decimal(income), loan_type=loan_type
            )
            assert score == expected
