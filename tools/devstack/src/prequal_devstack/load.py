"""A small steady load of applications with a known expected outcome (chaos tests, demo-style)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from credit_service.domain.scoring import cibil_score
from decision_service.domain.rules import decide
from prequal_shared.domain import LoanType

PANS = ["ABCDE1234F", "FGHIJ5678K", "KLMNO4321P", "PQRST8765U", "AAAAA0024A", "ZYXWV1357Q"]


def random_application(rng: random.Random, marker: str) -> dict[str, Any]:
    income = (
        Decimal(rng.choice([15000, 29999, 30000, 52000, 75000, 75001, 150000]))
        + Decimal(rng.randint(0, 99)) / 100
    )
    loan = (income * 48 + Decimal(rng.choice([-5000, -1, 0, 1, 5000]))).quantize(Decimal("0.01"))
    return {
        "pan_number": rng.choice(PANS),
        "applicant_name": marker,
        "monthly_income_inr": str(income),
        "loan_amount_inr": str(max(loan, Decimal("1.00"))),
        "loan_type": rng.choice([None, *[t.value for t in LoanType]]),
    }


def expected_outcome(body: dict[str, Any]) -> tuple[int, str]:
    income, loan = Decimal(body["monthly_income_inr"]), Decimal(body["loan_amount_inr"])
    loan_type = LoanType(body["loan_type"]) if body.get("loan_type") else None
    score = cibil_score(pan=body["pan_number"], monthly_income_inr=income, loan_type=loan_type)
    return score, decide(cibil_score=score, monthly_income_inr=income, loan_amount_inr=loan).value


@dataclass
class LoadResult:
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    """application id -> the body sent"""
    refused: list[tuple[int, float]] = field(default_factory=list)
    """(status code, seconds) of every answer that was not 202"""
    errors: list[str] = field(default_factory=list)
    """transport errors and timeouts"""
    latencies: list[float] = field(default_factory=list)


async def steady_load(
    api_url: str, *, rate_per_s: float, stop: asyncio.Event, marker: str, timeout_s: float = 5.0
) -> LoadResult:
    """POST applications at a constant rate until `stop` is set."""
    rng = random.Random(marker)
    result = LoadResult()
    async with httpx.AsyncClient(base_url=api_url, timeout=timeout_s) as api:

        async def one() -> None:
            body = random_application(rng, marker)
            started = time.monotonic()
            try:
                response = await api.post("/applications", json=body)
            except httpx.HTTPError as exc:
                result.errors.append(
                    f"{type(exc).__name__} after {time.monotonic() - started:.1f}s"
                )
                return
            elapsed = time.monotonic() - started
            result.latencies.append(elapsed)
            if response.status_code == 202:
                result.accepted[response.json()["application_id"]] = body
            else:
                result.refused.append((response.status_code, elapsed))

        tasks: set[asyncio.Task[None]] = set()
        interval = 1 / rate_per_s
        next_at = time.monotonic()
        while not stop.is_set():
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if tasks:
            await asyncio.gather(*tasks)
    return result


def new_marker() -> str:
    return f"load-{uuid.uuid4().hex[:10]}"
