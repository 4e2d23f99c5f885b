"""`make demo`: submit applications covering every outcome and show how each was decided."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import httpx

from prequal_devstack.config import StackConfig
from prequal_shared.domain import mask_pan

APPLICANTS: list[tuple[str, dict[str, Any]]] = [
    (
        "special PAN, scored 790",
        {
            "pan_number": "ABCDE1234F",
            "applicant_name": "Asha Rao",
            "monthly_income_inr": "50000",
            "loan_amount_inr": "200000",
            "loan_type": "PERSONAL",
        },
    ),
    (
        "special PAN, scored 610",
        {
            "pan_number": "FGHIJ5678K",
            "applicant_name": "Vikram Shah",
            "monthly_income_inr": "150000",
            "loan_amount_inr": "500000",
            "loan_type": "HOME",
        },
    ),
    (
        "income just below loan/48",
        {
            "pan_number": "ABCDE1234F",
            "applicant_name": "Meera Iyer",
            "monthly_income_inr": "2083.33",
            "loan_amount_inr": "100000",
            "loan_type": "AUTO",
        },
    ),
    (
        "income just above loan/48",
        {
            "pan_number": "ABCDE1234F",
            "applicant_name": "Rohan Das",
            "monthly_income_inr": "2083.34",
            "loan_amount_inr": "100000",
            "loan_type": "AUTO",
        },
    ),
    (
        "high income, home loan",
        {
            "pan_number": "KLMNO4321P",
            "applicant_name": "Priya Nair",
            "monthly_income_inr": "120000",
            "loan_amount_inr": "4000000",
            "loan_type": "HOME",
        },
    ),
    (
        "low income, personal loan",
        {
            "pan_number": "PQRST8765U",
            "applicant_name": "Arjun Mehta",
            "monthly_income_inr": "25000",
            "loan_amount_inr": "300000",
            "loan_type": "PERSONAL",
        },
    ),
]


async def run(api_url: str) -> int:
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as api:
        submitted: list[tuple[str, dict[str, Any], str, float]] = []
        for label, body in APPLICANTS:
            response = await api.post("/applications", json=body)
            response.raise_for_status()
            submitted.append((label, body, response.json()["application_id"], time.monotonic()))
        results: dict[str, tuple[dict[str, Any], float]] = {}
        deadline = time.monotonic() + 30
        while len(results) < len(submitted) and time.monotonic() < deadline:
            for _, _, application_id, started in submitted:
                if application_id in results:
                    continue
                status = (await api.get(f"/applications/{application_id}/status")).json()
                if status["status"] != "PENDING":
                    results[application_id] = (status, time.monotonic() - started)
            await asyncio.sleep(0.05)

    header = (
        f"{'CASE':<27} {'PAN':<11} {'INCOME':>12} {'LOAN':>12} "
        f"{'SCORE':>5}  {'DECISION':<13} {'TIME':>7}"
    )
    print(header)
    print("-" * len(header))
    for label, body, application_id, _ in submitted:
        status, elapsed = results.get(
            application_id, ({"status": "PENDING", "cibil_score": None}, 0.0)
        )
        print(
            f"{label:<27} {mask_pan(body['pan_number']):<11} "
            f"{Decimal(body['monthly_income_inr']):>12,.2f} "
            f"{Decimal(body['loan_amount_inr']):>12,.2f} "
            f"{status['cibil_score'] or '-':>5}  {status['status']:<13} "
            f"{(f'{elapsed * 1000:.0f} ms') if elapsed else '-':>7}"
        )
    print()
    print(f"API docs: {api_url}/docs    status: scripts/devstack status    stop: make down")
    return 0 if len(results) == len(submitted) else 1


def main() -> None:
    raise SystemExit(asyncio.run(run(StackConfig().api_url)))


if __name__ == "__main__":
    main()
