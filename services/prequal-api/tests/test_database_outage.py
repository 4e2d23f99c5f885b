"""With PostgreSQL stopped, the API answers 503 fast and keeps nothing half-written."""

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from prequal_devstack.testing import StackInfo, in_process_api, start_and_wait_for_the_pipeline

BODY = {"pan_number": "ABCDE1234F", "monthly_income_inr": "50000", "loan_amount_inr": "100000"}


@pytest.fixture
async def client(owned_stack: StackInfo) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(owned_stack) as client:
        yield client


async def test_503_fast_while_postgres_is_down_then_back_to_202(
    owned_stack: StackInfo, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/applications", json=BODY)).status_code == 202  # warm pool
    await asyncio.to_thread(owned_stack.stack.stop, "postgres")
    try:
        for path, method in (
            ("/applications", "POST"),
            ("/applications/00000000-0000-0000-0000-000000000000/status", "GET"),
        ):
            started = time.monotonic()
            response = await client.request(method, path, json=BODY if method == "POST" else None)
            assert response.status_code == 503, response.text
            assert time.monotonic() - started < 5
            assert response.headers["Retry-After"] == "2"
            assert "database is unavailable" in response.json()["detail"]
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgres"].startswith("down")
        assert ready.json()["checks"]["kafka"] == "ok"
    finally:
        await asyncio.to_thread(owned_stack.stack.start, "postgres")

    # The pooled connections died with the server; they are replaced at checkout, so the very
    # first request after the restart succeeds.
    first = await client.post("/applications", json=BODY)
    assert first.status_code == 202, first.text


async def test_a_restart_between_requests_is_invisible(
    owned_stack: StackInfo, api: httpx.AsyncClient
) -> None:
    """On the running API process: connections the restarted server closed are replaced at
    checkout instead of failing the first requests after the restart."""
    warm = await asyncio.gather(*[api.post("/applications", json=BODY) for _ in range(5)])
    assert {response.status_code for response in warm} == {202}
    await asyncio.to_thread(owned_stack.stack.stop, "postgres")
    await asyncio.to_thread(owned_stack.stack.start, "postgres")

    after = await asyncio.gather(*[api.post("/applications", json=BODY) for _ in range(5)])
    assert [response.status_code for response in after] == [202] * 5
    # The stack's decision service may have opened its circuit during the restart.
    await start_and_wait_for_the_pipeline(owned_stack, "postgres")
