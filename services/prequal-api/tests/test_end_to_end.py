"""POST to the running API, then poll until the decision: every outcome, through real Kafka."""

import uuid
from typing import Any

import httpx
import pytest

from prequal_devstack.testing import StackInfo, poll_until

CASES = [
    # pan, income, loan, loan type, expected score, expected status
    ("ABCDE1234F", "50000", "200000", "PERSONAL", 790, "PRE_APPROVED"),
    ("FGHIJ5678K", "500000", "1000", "HOME", 610, "REJECTED"),
    ("ABCDE1234F", "2083.33", "100000", "AUTO", 790, "MANUAL_REVIEW"),  # income < loan / 48
    ("ABCDE1234F", "2083.34", "100000", "AUTO", 790, "PRE_APPROVED"),  # income > loan / 48
    ("ABCDE1234F", "100", "4800", None, 790, "MANUAL_REVIEW"),  # income == loan / 48
    ("AAAAA0024A", "80000", "500000", "HOME", 700, "PRE_APPROVED"),  # 650 + 40 + 10
    ("AAAAA0024A", "20000", "100000", "PERSONAL", 620, "REJECTED"),  # 650 - 20 - 10
]


async def submit_and_wait(api: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> Any:
    created = await api.post("/applications", json=body, headers=headers)
    assert created.status_code == 202, created.text
    application_id = created.json()["application_id"]

    async def decided() -> Any:
        status = (await api.get(f"/applications/{application_id}/status")).json()
        return status if status["status"] != "PENDING" else None

    result = await poll_until(decided, timeout_s=30)
    assert result is not None, f"application {application_id} was not decided within 30 s"
    return result


@pytest.mark.parametrize(("pan", "income", "loan", "loan_type", "score", "status"), CASES)
async def test_each_outcome_end_to_end(
    api: httpx.AsyncClient,
    pan: str,
    income: str,
    loan: str,
    loan_type: str | None,
    score: int,
    status: str,
) -> None:
    body = {"pan_number": pan, "monthly_income_inr": income, "loan_amount_inr": loan}
    if loan_type:
        body["loan_type"] = loan_type
    result = await submit_and_wait(api, body)
    assert (result["cibil_score"], result["status"]) == (score, status)


async def test_logs_of_every_service_carry_the_correlation_id_and_never_a_full_pan(
    stack: StackInfo, api: httpx.AsyncClient
) -> None:
    correlation_id = f"e2e-{uuid.uuid4()}"
    pan = "QWERT6789Y"
    await submit_and_wait(
        api,
        {"pan_number": pan, "monthly_income_inr": "60000", "loan_amount_inr": "300000"},
        **{"X-Correlation-ID": correlation_id},
    )
    logs = stack.stack.config.state / "logs"

    async def all_logged() -> bool:
        return all(
            correlation_id in (logs / f"{name}.log").read_text()
            for name in ("prequal-api", "credit-service", "decision-service")
        )

    assert await poll_until(all_logged, timeout_s=5)
    for path in logs.glob("*.log"):
        text = path.read_text(errors="replace")
        for full_pan in (pan, "ABCDE1234F", "FGHIJ5678K", "AAAAA0024A"):
            assert full_pan not in text, f"{full_pan} found in {path.name}"
    assert "QWERT***9Y" in (logs / "credit-service.log").read_text()
